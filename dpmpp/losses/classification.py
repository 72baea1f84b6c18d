"""Cross-entropies over identity logits, all aware of class-ignoring (a mixed sample's partner identity)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def ignore_partner(logits: torch.Tensor, ignore: torch.Tensor | None) -> torch.Tensor:
    """Set logits[i, ignore[i]] to -inf where ignore[i] >= 0 (SPT's class-ignoring). [B, C], [B] -> [B, C]."""
    if ignore is None or not bool((ignore >= 0).any()):
        return logits
    rows = (ignore >= 0).nonzero().flatten()
    logits = logits.clone()
    logits[rows, ignore[rows]] = float("-inf")
    return logits


def smoothed_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0, ignore: torch.Tensor | None = None
) -> torch.Tensor:
    """Label-smoothed CE whose smoothing mass goes only to classes that are not ignored. [B, C], [B] -> scalar."""
    logits = ignore_partner(logits, ignore)
    log_probs = F.log_softmax(logits, dim=1)
    nll = -log_probs.gather(1, labels[:, None]).squeeze(1)
    if smoothing == 0:
        return nll.mean()
    valid = torch.isfinite(logits)
    uniform = -(log_probs.masked_fill(~valid, 0.0)).sum(1) / valid.sum(1)
    return ((1 - smoothing) * nll + smoothing * uniform).mean()


def arcface_logits(cosine: torch.Tensor, labels: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """Additive angular margin on the target class: s·cos(θ_y + m), s·cos θ elsewhere. [B, C] -> [B, C]."""
    sine = (1.0 - cosine.square()).clamp_min(1e-7).sqrt()  # clamp before the root: its gradient at 0 is inf
    phi = cosine * math.cos(margin) - sine * math.sin(margin)
    # Keep the target logit monotonic in θ beyond π - m (the usual ArcFace fallback).
    phi = torch.where(cosine > math.cos(math.pi - margin), phi, cosine - math.sin(math.pi - margin) * margin)
    one_hot = F.one_hot(labels, cosine.shape[1]).bool()
    return scale * torch.where(one_hot, phi, cosine)
