"""Stage 1 of CLIP-ReID: learnable per-identity prompt tokens through CLIP's frozen text encoder."""

from __future__ import annotations

import open_clip
import torch
from torch import nn


class TextEncoder(nn.Module):
    """CLIP's text tower from token *embeddings* (so learnt tokens can be spliced in); frozen in stage 1."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.transformer = clip.transformer
        self.positional_embedding = clip.positional_embedding
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)

    def forward(self, embeddings: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """embeddings [C, L, W], eot_index [C] -> text features [C, E] (EOT token through the projection)."""
        x = embeddings + self.positional_embedding.to(embeddings.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_index]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection


class PromptLearner(nn.Module):
    """`"A photo of a X X X X person."` with the X tokens learnt per identity: ctx [C, n_ctx, W] ~ N(0, 0.02)."""

    def __init__(self, clip: nn.Module, model_name: str, num_classes: int, template: str) -> None:
        super().__init__()
        n_ctx = template.split().count("X")
        if n_ctx == 0:
            raise ValueError(f"prompt template {template!r} has no learnable X tokens")
        tokenizer = open_clip.get_tokenizer(model_name)
        context_length = clip.positional_embedding.shape[0]
        tokens = tokenizer([template], context_length=context_length)  # [1, L]
        x_id = tokenizer(["X"], context_length=context_length)[0, 1].item()
        positions = (tokens[0] == x_id).nonzero().flatten()
        if len(positions) != n_ctx or (positions.diff() != 1).any():
            raise ValueError(f"the X tokens of {template!r} must be consecutive single tokens")
        tokens = tokens.to(clip.token_embedding.weight.device)
        with torch.no_grad():
            embedding = clip.token_embedding(tokens)  # [1, L, W]
        start = int(positions[0])
        self.register_buffer("prefix", embedding[:, :start].clone(), persistent=False)
        self.register_buffer("suffix", embedding[:, start + n_ctx :].clone(), persistent=False)
        self.register_buffer("eot_index", tokens.argmax(dim=-1), persistent=False)  # EOT has the largest id
        self.ctx = nn.Parameter(torch.empty(num_classes, n_ctx, embedding.shape[-1]))
        nn.init.normal_(self.ctx, std=0.02)

    def forward(self, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings [C or B, L, W] of the prompts of `labels` (all classes if None), and EOT indices."""
        ctx = self.ctx if labels is None else self.ctx[labels]
        n = ctx.shape[0]
        embeddings = torch.cat([self.prefix.expand(n, -1, -1), ctx, self.suffix.expand(n, -1, -1)], dim=1)
        return embeddings, self.eot_index.expand(n)
