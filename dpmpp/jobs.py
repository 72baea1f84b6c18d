"""One background training job at a time, observable by any number of viewers (the app polls it), stopped only by
the session that started it or by the teacher."""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from dpmpp.config import Config, load_preset, preset_names
from dpmpp.engine.loop import ProgressEvent, TrainingStopped

logger = logging.getLogger(__name__)
BUNDLED_DATASETS = ("pets09_occ", "pets09_holistic")
COMPONENTS = (
    "dynamic mask",
    "text stage",
    "patch transfer",
    "occlusion-aware pairing",
    "class-ignoring",
    "head orthogonality",
)  # the training switches a user can turn off
MAX_EPOCHS = 200  # stage-2 epochs one app training may ask for


def check_epochs(epochs) -> int:
    """`epochs` as a whole number from 1 to MAX_EPOCHS, else ValueError saying so."""
    whole = isinstance(epochs, (int, float)) and not isinstance(epochs, bool) and math.isfinite(epochs)
    if not whole or epochs != int(epochs) or not 1 <= epochs <= MAX_EPOCHS:
        raise ValueError(f"epochs must be a whole number from 1 to {MAX_EPOCHS}; got {str(epochs)[:20]}")
    return int(epochs)


def training_config(
    dataset: str, root: str, preset: str, epochs: int, switches: list[str], data_root: str | Path | None
) -> Config:
    """A preset with the chosen dataset, epochs and components. A user's dataset must lie inside `data_root`.

    Only the named presets are offered (no JSON file paths), and epochs must be 1 to MAX_EPOCHS (`check_epochs`).
    """
    if preset not in preset_names():
        raise ValueError(f"unknown preset {str(preset)[:40]!r}; expected one of {preset_names()}")
    epochs = check_epochs(epochs)
    config = load_preset(preset)
    config.data.name = dataset
    if dataset not in BUNDLED_DATASETS:
        if data_root is None:
            raise ValueError("Start the app with --data-root DIR to train on your own datasets.")
        folder = (Path(data_root) / root).resolve()
        if not folder.is_relative_to(Path(data_root).resolve()):
            raise ValueError("The dataset folder must lie inside the data root.")
        config.data.root = str(folder)
    unknown = sorted(set(switches) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"unknown components {unknown}; expected some of {list(COMPONENTS)}")
    config.train.epochs = epochs
    config.model.use_mask = "dynamic mask" in switches
    config.model.use_text_stage = "text stage" in switches
    config.aug.patch_transfer = "patch transfer" in switches
    config.aug.occlusion_pairing = "occlusion-aware pairing" in switches
    config.aug.class_ignoring = config.aug.class_ignoring if "class-ignoring" in switches else False
    config.loss.orth_weight = config.loss.orth_weight if "head orthogonality" in switches else 0.0
    return config


@dataclass
class JobStatus:
    state: str  # "idle", "running", "stopping", "finished", "stopped", "failed"
    out_dir: str = ""
    message: str = ""
    stage: str = ""
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    images_per_s: float = 0.0
    eta_s: float = 0.0
    history: list[dict] = field(default_factory=list)  # one row per step: step, stage, losses, accuracy
    evaluations: list[dict] = field(default_factory=list)
    started: float = 0.0
    owner: str | None = None  # the session that started the job (None: the server itself)
    version: int = 0  # counts the changes, so that viewers redraw only when something happened


class StopRefused(PermissionError):
    """A session asked to stop a training job that another session started."""


class TrainingJobs:
    """Starts `dpmpp.engine.train.train` in a thread; refuses a second job while one runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = JobStatus("idle")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def status(self) -> JobStatus:
        with self._lock:
            return JobStatus(
                **{
                    **self._status.__dict__,
                    "history": list(self._status.history),
                    "evaluations": list(self._status.evaluations),
                }
            )

    def start(self, config: Config, out_dir: str | Path, owner: str | None = None) -> JobStatus:
        """Start training for session `owner`; RuntimeError if a job is already running or `out_dir` already holds
        a model. Messages name the output folder by its name only."""
        out_dir = Path(out_dir)
        with self._lock:
            if self._status.state in ("running", "stopping"):
                raise RuntimeError(
                    f"a training job is already running into {Path(self._status.out_dir).name}; wait for it or "
                    "stop it first"
                )
            if (out_dir / "model.safetensors").exists():
                raise RuntimeError(f"{out_dir.name} already holds a model; choose another name")
            self._stop.clear()
            self._status = JobStatus(
                "running", str(out_dir), "starting", started=time.time(), owner=owner, version=self._status.version + 1
            )
            self._thread = threading.Thread(target=self._run, args=(config, out_dir), daemon=True)
            self._thread.start()
        return self.status()

    def stop(self, requester: str | None = None, override: bool = False) -> JobStatus:
        """Stop the running job after its current step. Session `requester` may stop only the job it started, unless
        `override` (the teacher); StopRefused otherwise. `requester=None` is the server itself."""
        with self._lock:
            if self._status.state == "running":
                owner = self._status.owner
                if not override and requester is not None and owner is not None and requester != owner:
                    raise StopRefused(
                        "this training was started in another session; only that session or the teacher can stop it"
                    )
                self._stop.set()
                self._status.state, self._status.message = "stopping", "stopping after the current step"
                self._status.version += 1
        return self.status()

    def wait(self, timeout: float | None = None) -> JobStatus:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status()

    def _on_event(self, event: ProgressEvent) -> None:
        with self._lock:
            status = self._status
            status.stage, status.epoch, status.epochs = event.stage, event.epoch, event.epochs
            status.step, status.steps = event.step, event.steps
            if event.kind == "eval":
                status.evaluations.append({"epoch": event.epoch, **(event.metrics or {})})
                status.version += 1
                return
            status.images_per_s, status.eta_s = event.images_per_s, event.eta_s
            status.history.append(
                {
                    "step": len(status.history) + 1,
                    "stage": event.stage,
                    "epoch": event.epoch,
                    "accuracy": event.accuracy,
                    **event.losses,
                }
            )
            status.message = f"{event.stage} epoch {event.epoch}/{event.epochs}, step {event.step}/{event.steps}"
            status.version += 1

    def _run(self, config: Config, out_dir: Path) -> None:
        from dpmpp.engine.train import train

        try:
            final = train(config, out_dir, callback=self._on_event, should_stop=self._stop.is_set)
            state, message = "finished", f"finished: {out_dir.name}"
            if final:
                self._status.evaluations.append({"final": final.get("final", final)})
        except TrainingStopped:
            state, message = "stopped", f"stopped; the last completed epoch is saved in {out_dir.name}"
        except Exception as error:  # noqa: BLE001 - reported to the user, never swallowed silently
            logger.error("training failed: %s", traceback.format_exc())
            state, message = "failed", f"failed: {str(error)[:300]}"
        with self._lock:
            self._status.state, self._status.message = state, message
            self._status.version += 1
