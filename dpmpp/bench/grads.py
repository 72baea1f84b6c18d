"""Gradient norms over the first epochs of a trained row: how often clipping acts, and which groups drive it.

`python -m dpmpp bench grads [--methods ROW] [--epochs N]` trains the row of `bench accuracy` with its full
schedule, records every stage-2 step's gradient norm per parameter group before clipping, stops after N epochs
and prints quantiles. The norm the loop clips is that of all groups not clipped apart, taken together.
"""

from __future__ import annotations

import math
import tempfile

import numpy as np

from dpmpp.config import apply_overrides, load_preset
from dpmpp.engine.loop import ProgressEvent, TrainingStopped

DEFAULT_ROW = "DPM with the saliency head in the global norm"


def record(
    method: str = DEFAULT_ROW, epochs: int = 3, seed: int = 0, device: str | None = None, extra: tuple[str, ...] = ()
) -> dict:
    """{"steps": [{group: norm, ..., "together": norm}, ...], "steps_per_epoch" (of the first
    epoch), "grad_clip", "apart": [names]}."""
    from dpmpp.bench.accuracy import PRESET, TRAINED
    from dpmpp.engine.train import Trainer

    if TRAINED.get(method) is None:
        raise ValueError(f"bench grads needs one of our trained rows; got {method!r}")
    config = apply_overrides(load_preset(PRESET), [*TRAINED[method], *extra])
    config.train.seed, config.train.eval_every = seed, 0
    steps: list[dict[str, float]] = []
    done = [False]
    steps_per_epoch = [0]

    def callback(event: ProgressEvent) -> None:
        if event.stage == "stage2" and event.kind == "step":
            if event.epoch > epochs:  # the first step past the last recorded epoch: stop before the next one
                done[0] = True
                return
            steps.append(dict(event.grad_norms))
            if event.epoch == 1:
                steps_per_epoch[0] = event.steps

    def should_stop() -> bool:
        return done[0]

    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, folder, device, callback, should_stop)
        trainer.record_grad_norms = True
        apart = [g["name"] for g in trainer.parameter_groups() if g.get("clip_apart")]
        try:
            trainer.run()
        except TrainingStopped:
            pass
    for norms in steps:
        norms["together"] = math.sqrt(sum(v**2 for k, v in norms.items() if k not in apart))
    return {
        "method": method,
        "seed": seed,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch[0],
        "steps": steps,
        "grad_clip": config.train.grad_clip,
        "apart": apart,
    }


def format_table(result: dict) -> str:
    steps, clip = result["steps"], result["grad_clip"]
    groups = list(steps[0])
    lines = [
        f"{result['method']}, seed {result['seed']}: {len(steps)} stage-2 steps over {result['epochs']} epochs, "
        f"clipped at {clip}" + (f"; clipped apart: {', '.join(result['apart'])}" if result["apart"] else ""),
        "| gradient norm | median | 10 % | 90 % | steps above the clip |",
        "|---|---|---|---|---|",
    ]
    for name in groups:
        values = np.array([s[name] for s in steps])
        above = (
            f"{100 * np.mean(values > clip):.0f} %" if clip and (name == "together" or name in result["apart"]) else ""
        )
        q10, q50, q90 = np.percentile(values, [10, 50, 90])
        lines.append(f"| {name} | {q50:.1f} | {q10:.1f} | {q90:.1f} | {above} |")
    return "\n".join(lines)
