"""The CLIP image encoder, wrapped (never forked) from open_clip, at re-ID input size with intermediate tokens."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from torch import nn

from dpmpp.config import PRESET_DIR, check_choice

logger = logging.getLogger(__name__)
_CUSTOM_CONFIGS = PRESET_DIR / "open_clip"
open_clip.add_model_config(_CUSTOM_CONFIGS)  # makes "dpmpp-tiny" a model name open_clip knows


class PretrainedWeightsMissing(FileNotFoundError):
    """CLIP weights were asked for but are not on this machine (nothing is downloaded at run time)."""


def resolve_pretrained(model_name: str, pretrained: str | None, cache_dir: str | Path | None = None) -> str | None:
    """A local weights file for (model, tag), or None for random init. Never downloads.

    Looks in `cache_dir` when given, else in the Hugging Face cache and ~/.cache/clip (OpenAI's own files).
    """
    if pretrained is None or pretrained in ("", "none", "None"):
        return None
    if Path(pretrained).expanduser().is_file():
        return str(Path(pretrained).expanduser())
    looked = []
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained) or {}
    if cfg.get("hf_hub"):
        from huggingface_hub import hf_hub_download

        repo_id = cfg["hf_hub"].rstrip("/")
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            looked.append(f"huggingface cache: {repo_id}/{filename}")
            try:
                return hf_hub_download(repo_id, filename, local_files_only=True, cache_dir=cache_dir)
            except Exception:  # noqa: BLE001 - any failure means "not cached"
                continue
    if cfg.get("url"):
        default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clip"
        for folder in (Path(cache_dir) if cache_dir else default,):
            candidate = folder / Path(cfg["url"]).name
            looked.append(str(candidate))
            if candidate.is_file():
                return str(candidate)
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    raise PretrainedWeightsMissing(
        f"CLIP weights {model_name!r}/{pretrained!r} are not on this machine and nothing is downloaded at run time.\n"
        f"Looked for: {pretrained!r} as a file; " + "; ".join(looked or ["(no known source for this tag)"]) + ".\n"
        f"Provide them with --pretrained /path/to/weights (OpenAI's ViT-B-16.pt or an open_clip .safetensors/.bin), "
        f'or fill the cache once on a machine with internet: python -c "import open_clip; '
        f"open_clip.create_model('{model_name}', pretrained='{pretrained}')\" and copy ~/.cache/huggingface. "
        f"Known tags for this model: {tags}. Use --set model.pretrained=null to train from random init."
    )


class _NoRandomInitWarning(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded ... initialized randomly": said of a model whose weights
    are about to be loaded from a checkpoint, it is wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded")


def create_clip(
    model_name: str, pretrained: str | None, image_size: tuple[int, int], device=None, weights_follow: bool = False
) -> nn.Module:
    """An open_clip CLIP model at re-ID input size (position embedding resized when weights are loaded).

    `weights_follow`: the caller loads trained weights next (a checkpoint), so random init is not worth a warning.
    """
    import zipfile

    weights = resolve_pretrained(model_name, pretrained)
    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model_name!r}; e.g. ViT-B-16-quickgelu, dpmpp-tiny")
    # OpenAI's own files (ViT-B-16.pt) are TorchScript archives, which torch.load refuses under weights_only=True;
    # without it, torch.load hands them to torch.jit.load (the loader OpenAI's clip package uses), which restores
    # TorchScript types only, not arbitrary Python objects. Every other file keeps weights_only=True.
    torchscript = False
    if weights is not None and zipfile.is_zipfile(weights):
        with zipfile.ZipFile(weights) as archive:
            torchscript = any(n.count("/") == 1 and n.endswith("/constants.pkl") for n in archive.namelist())
    quiet = _NoRandomInitWarning()
    if weights_follow:
        logging.getLogger().addFilter(quiet)
    try:
        model = open_clip.create_model(
            model_name,
            pretrained=weights,
            force_image_size=tuple(image_size),
            device=device or "cpu",
            weights_only=not torchscript,
        )
    finally:
        logging.getLogger().removeFilter(quiet)
    logger.info("created %s (%s) at %s", model_name, weights or "random init", tuple(image_size))
    return model


@dataclass
class VisualTokens:
    cls: torch.Tensor  # [B, W] CLS feature after ln_post (x)
    proj: torch.Tensor  # [B, E] projected CLS feature (p), the space text lives in
    maps: list[torch.Tensor]  # per requested block: patch tokens as maps [B, W, h, w]
    last_block_input: torch.Tensor  # [B, 1 + h*w, W] tokens entering the last block (for attention logits)
    last_tokens: torch.Tensor  # [B, h*w, W] patch tokens after the last block


class CameraEmbedding(nn.Module):
    """SIE: adds `coef * embedding[camid]` after the position embedding, to every token or to the CLS token only.

    Installed in place of the encoder's `patch_dropout` module, which open_clip's VisionTransformer runs on
    [B, 1 + N, W] tokens, CLS at index 0, right after adding the position embedding and before `ln_pre`; so
    open_clip's forward is reused unchanged. `camids` is set for the duration of a call.
    `tokens`: "all" (every token) or "cls" (token 0 only, as CLIP-ReID).
    """

    def __init__(self, inner: nn.Module, num_cameras: int, width: int, coef: float, tokens: str = "all") -> None:
        super().__init__()
        check_choice("model.sie_tokens", tokens)
        self.inner, self.coef, self.tokens = inner, coef, tokens
        self.embedding = nn.Parameter(torch.zeros(num_cameras, width))
        nn.init.trunc_normal_(self.embedding, std=0.02)
        self.camids: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 1 + N, W] -> [B, 1 + N, W] (then the wrapped patch dropout)."""
        if self.camids is not None:
            camids = self.camids.clamp(0, self.embedding.shape[0] - 1)
            offset = self.coef * self.embedding[camids].unsqueeze(1).to(x.dtype)  # [B, 1, W]
            if self.tokens == "cls":
                x = torch.cat([x[:, :1] + offset, x[:, 1:]], dim=1)
            else:
                x = x + offset
        return self.inner(x)


class ImageEncoder(nn.Module):
    """open_clip's VisionTransformer, returning the CLS feature, its projection and intermediate patch maps."""

    def __init__(
        self,
        visual: nn.Module,
        map_blocks: list[int],
        num_cameras: int = 0,
        sie_coef: float = 3.0,
        sie_tokens: str = "all",
    ) -> None:
        super().__init__()
        self.visual = visual
        self.num_blocks = len(visual.transformer.resblocks)
        bad = [b for b in map_blocks if not 0 <= b < self.num_blocks]
        if bad:
            raise ValueError(f"mask_blocks {bad} outside 0..{self.num_blocks - 1} for this encoder")
        self.map_blocks = list(map_blocks)
        self.width = visual.transformer.width
        self.embed_dim = visual.proj.shape[1]
        self.grid = tuple(visual.grid_size)
        if num_cameras > 0:  # registered once, inside the tower: a checkpoint cannot store one tensor under two names
            visual.patch_dropout = CameraEmbedding(visual.patch_dropout, num_cameras, self.width, sie_coef, sie_tokens)

    @property
    def camera(self) -> CameraEmbedding | None:
        """The SIE module, when the encoder has one (it lives in the tower, in place of `patch_dropout`)."""
        return self.visual.patch_dropout if isinstance(self.visual.patch_dropout, CameraEmbedding) else None

    def forward(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> VisualTokens:
        """images [B, 3, H, W] -> VisualTokens."""
        last, before_last = self.num_blocks - 1, self.num_blocks - 2
        indices = sorted(set(self.map_blocks) | {last, before_last})
        if self.camera is not None:
            self.camera.camids = camids
        try:
            out = self.visual.forward_intermediates(
                images, indices=indices, intermediates_only=True, output_fmt="NLC", output_extra_tokens=True
            )
        finally:
            if self.camera is not None:
                self.camera.camids = None
        tokens = dict(zip(indices, out["image_intermediates"]))  # [B, h*w, W] each
        prefix = dict(zip(indices, out["image_intermediates_prefix"]))  # [B, 1, W] each
        cls = self.visual.ln_post(prefix[last][:, 0])
        h, w = images.shape[-2] // self.visual.patch_size[0], images.shape[-1] // self.visual.patch_size[1]
        maps = [tokens[b].transpose(1, 2).reshape(len(images), self.width, h, w) for b in self.map_blocks]
        return VisualTokens(
            cls=cls,
            proj=cls @ self.visual.proj,
            maps=maps,
            last_block_input=torch.cat([prefix[before_last], tokens[before_last]], dim=1),
            last_tokens=tokens[last],
        )

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.visual.patch_size)

    def gradcam_layer(self) -> nn.Module:
        """The layer Grad-CAM reads: the last block's first norm, whose tokens `gradcam` turns back into maps."""
        return self.visual.transformer.resblocks[-1].ln_1

    def patch_projection(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens [B, N, W] -> prototype space [B, N, E] (ln_post then proj, as for CLS)."""
        return self.visual.ln_post(tokens) @ self.visual.proj

    def cls_attention_logits(self, block_input: torch.Tensor) -> torch.Tensor:
        """Per-head CLS->patch attention logits of the last block. [B, 1+N, W] -> [B, heads, N]."""
        block = self.visual.transformer.resblocks[-1]
        attn = block.attn
        heads = attn.num_heads
        x = block.ln_1(block_input)
        q_weight, k_weight, _ = attn.in_proj_weight.chunk(3)
        q_bias, k_bias, _ = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None, None, None)
        q = nn.functional.linear(x[:, :1], q_weight, q_bias)  # [B, 1, W]
        k = nn.functional.linear(x[:, 1:], k_weight, k_bias)  # [B, N, W]
        b, n, width = k.shape
        q = q.view(b, 1, heads, width // heads).transpose(1, 2)  # [B, H, 1, d]
        k = k.view(b, n, heads, width // heads).transpose(1, 2)  # [B, H, N, d]
        return (q @ k.transpose(-1, -2)).squeeze(2) / (width // heads) ** 0.5
