"""One training loop for every stage. A stage is data: its optimiser, batches, loss function and schedule."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

from dpmpp.engine.schedule import lr_factor

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; training stops before anything from that step is saved."""


class TrainingStopped(RuntimeError):
    """Training was asked to stop (e.g. the app's Stop button); the last epoch checkpoint is kept."""


@dataclass
class ProgressEvent:
    stage: str
    epoch: int  # 1-based epoch in progress
    epochs: int
    step: int  # 1-based step within the epoch
    steps: int
    losses: dict[str, float] = field(default_factory=dict)
    accuracy: float | None = None
    images_per_s: float = 0.0
    eta_s: float = 0.0  # remaining time of this stage
    lr: float = 0.0
    metrics: dict | None = None  # set on evaluation events
    kind: str = "step"  # "step", "eval", "stage_end"
    grad_norms: dict[str, float] = field(default_factory=dict)  # each parameter group's norm before clipping


@dataclass
class Stage:
    name: str
    epochs: int
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    batches: Callable[[int], Iterable[Any]]  # epoch (0-based) -> batches
    compute: Callable[[Any], tuple[dict[str, torch.Tensor], int, float | None]]  # batch -> losses, images, accuracy
    weights: dict[str, float]
    warmup_epochs: int = 0
    schedule: str = "cosine"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    grad_clip: float | None = None
    on_epoch_end: Callable[[int], dict | None] | None = None  # epoch (1-based) -> metrics to report, or None
    record_grad_norms: bool = False  # add each group's gradient norm to the step events (`bench grads`)


def weighted_total(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    unknown = sorted(set(losses) - set(weights))
    if unknown:
        raise KeyError(f"losses {unknown} have no weight in the config")
    return sum(weights[name] * value for name, value in losses.items() if weights[name] != 0)


def group_norms(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The gradient norm of each parameter group (by its "name", else its index), as backward left it."""
    norms = {}
    for index, group in enumerate(optimizer.param_groups):
        grads = [p.grad.detach() for p in group["params"] if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if grads else 0.0
        norms[str(group.get("name", index))] = float(norm)
    return norms


def run_stage(
    stage: Stage,
    start_epoch: int = 0,
    callback: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Train `stage` from `start_epoch` (0-based) to its end."""
    # The base rate is remembered in the group, so a resumed optimiser (whose "lr" is the decayed one) keeps it.
    base_lrs = [group.setdefault("initial_lr", group["lr"]) for group in stage.optimizer.param_groups]
    # Groups marked "clip_apart" are clipped on their own; all the others share one global norm.
    clip_sets = [[p for g in stage.optimizer.param_groups if not g.get("clip_apart") for p in g["params"]]]
    clip_sets += [list(g["params"]) for g in stage.optimizer.param_groups if g.get("clip_apart")]
    started, images_seen = time.perf_counter(), 0
    total_steps = max((stage.epochs - start_epoch) * stage.steps_per_epoch, 1)
    for epoch in range(start_epoch, stage.epochs):
        batches = stage.batches(epoch)
        # A P x K sampler's length can change by a batch from epoch to epoch; the schedule keeps the nominal one.
        steps_now = len(batches) if hasattr(batches, "__len__") else stage.steps_per_epoch
        for step, batch in enumerate(batches):
            if should_stop is not None and should_stop():
                raise TrainingStopped(f"stopped during {stage.name} epoch {epoch + 1}")
            factor = lr_factor(
                epoch * stage.steps_per_epoch + step,
                stage.steps_per_epoch,
                stage.epochs,
                stage.warmup_epochs,
                stage.schedule,
                stage.milestones,
                stage.gamma,
            )
            for group, base in zip(stage.optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
            losses, num_images, accuracy = stage.compute(batch)
            total = weighted_total(losses, stage.weights)
            values = {name: float(value.detach()) for name, value in losses.items()}
            bad = {name: v for name, v in values.items() if not math.isfinite(v)}
            if bad or not torch.isfinite(total):
                raise NonFiniteLossError(
                    f"{stage.name} epoch {epoch + 1} step {step + 1}: non-finite losses {bad or values}; "
                    "stopped before saving (lower the learning rate or check the data)"
                )
            stage.optimizer.zero_grad(set_to_none=True)
            total.backward()
            norms = group_norms(stage.optimizer) if stage.record_grad_norms and callback is not None else {}
            if stage.grad_clip:
                for params in clip_sets:
                    torch.nn.utils.clip_grad_norm_(params, stage.grad_clip)
            stage.optimizer.step()
            images_seen += num_images
            if callback is not None:
                elapsed = time.perf_counter() - started
                done = (epoch - start_epoch) * stage.steps_per_epoch + step + 1
                callback(
                    ProgressEvent(
                        stage.name,
                        epoch + 1,
                        stage.epochs,
                        step + 1,
                        steps_now,
                        {"total": float(total.detach()), **values},
                        accuracy,
                        images_seen / elapsed,
                        elapsed / done * max(total_steps - done, 0),
                        stage.optimizer.param_groups[0]["lr"],
                        grad_norms=norms,
                    )
                )
        metrics = stage.on_epoch_end(epoch + 1) if stage.on_epoch_end is not None else None
        if metrics is not None and callback is not None:
            callback(
                ProgressEvent(
                    stage.name,
                    epoch + 1,
                    stage.epochs,
                    steps_now,
                    steps_now,
                    metrics=metrics,
                    kind="eval",
                )
            )
