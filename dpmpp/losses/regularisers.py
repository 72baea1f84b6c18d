"""Head orthogonality, prototype-text alignment, and SPT's saliency-selection losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dpmpp.losses.classification import smoothed_cross_entropy


def head_orthogonality(attention: torch.Tensor) -> torch.Tensor:
    """DPM's head enrich loss: ‖ÂÂᵀ − I‖²_F / H² with Â the per-head CLS->patch logits, L2-normalised. [B, H, N]."""
    a_hat = F.normalize(attention.float(), dim=-1)
    gram = a_hat @ a_hat.transpose(1, 2)  # [B, H, H]
    heads = gram.shape[-1]
    eye = torch.eye(heads, device=gram.device)
    return (gram - eye).square().sum(dim=(1, 2)).mean() / heads**2


def prototype_alignment(prototypes: torch.Tensor, text_prototypes: torch.Tensor) -> torch.Tensor:
    """mean_c (1 − cos(w_c, t_c))."""
    return (1 - F.cosine_similarity(prototypes, text_prototypes, dim=1)).mean()


def saliency_selection(
    saliency: torch.Tensor,
    patch_proj: torch.Tensor,
    prototypes: torch.Tensor,
    labels: torch.Tensor,
    scale: float,
    keep: float,
    ignore: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """SPT's losses for the saliency head. saliency [B, h, w], patch_proj [B, N, E], prototypes [C, E].

    The kept patches must still classify, about `keep` of them are kept, and the discarded patches must not
    predict the same identity.
    """
    weights = saliency.flatten(1)  # [B, N]
    prototypes = F.normalize(prototypes.detach(), dim=1)

    def pooled_logits(w: torch.Tensor) -> torch.Tensor:
        pooled = (w[:, :, None] * patch_proj).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-6)
        return scale * F.normalize(pooled, dim=1) @ prototypes.T

    kept, dropped = pooled_logits(weights), pooled_logits(1 - weights)
    overlap = (F.softmax(kept, dim=1) * F.softmax(dropped, dim=1)).sum(1).mean()
    return {
        "saliency_cls": smoothed_cross_entropy(kept, labels, 0.0, ignore),
        "saliency_ratio": (weights.mean() - keep).square(),
        "saliency_overlap": overlap,
    }
