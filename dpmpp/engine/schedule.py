"""Per-iteration learning-rate factors: linear warm-up, then cosine decay or steps."""

from __future__ import annotations

import math


def lr_factor(
    step: int,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: int,
    schedule: str,
    milestones: list[int] | None = None,
    gamma: float = 0.1,
    warmup_start: float = 0.01,
) -> float:
    """Multiplier of the base rate at global iteration `step` (0-based)."""
    epoch = step / max(steps_per_epoch, 1)
    if epoch < warmup_epochs:
        return warmup_start + (1 - warmup_start) * epoch / warmup_epochs
    if schedule == "cosine":
        progress = (epoch - warmup_epochs) / max(epochs - warmup_epochs, 1e-8)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "step":
        return gamma ** sum(epoch >= m for m in (milestones or []))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}; expected cosine, step or constant")
