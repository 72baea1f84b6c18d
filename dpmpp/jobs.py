"""One background training job at a time, observable by any number of viewers (the app polls it), stopped only by
the session that started it or by the teacher.

The job runs in a child process (`python -m dpmpp.jobs`) in Linux's idle scheduling class (niced where that class is
missing) and limited to one thread, so that a training does not slow every visitor's requests down and its memory
goes when it ends. The server writes the job to the child's stdin, then "stop" lines; the child answers in JSON
lines on its stdout: "started", one "event" per progress event, "end". A stop the child has not obeyed within
`grace_s` seconds (it checks at every step, not while it builds the model or evaluates) ends it with SIGTERM, then
SIGKILL. A child whose server is gone (its stdin closed) stops
itself, so a killed server leaves no training behind.
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dpmpp.atomic import write_json
from dpmpp.config import Config, load_preset, preset_names
from dpmpp.engine.checkpoint import METRICS, WEIGHTS
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
TRAIN = "dpmpp.engine.train:train"  # what the child runs: "module:function" with train()'s keyword arguments
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # put on the child's PYTHONPATH


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
    eta_s: float = 0.0  # the whole job's remaining time, as far as its stages have been timed (see `message`)
    history: list[dict] = field(default_factory=list)  # one row per step: step, stage, losses, accuracy
    started: float = 0.0
    owner: str | None = None  # the session that started the job (None: the server itself)
    version: int = 0  # counts the changes, so that viewers redraw only when something happened
    pid: int = 0  # the training process, once it has started


class StopRefused(PermissionError):
    """A session asked to stop a training job that another session started."""


@dataclass
class _Job:
    """One job as the server follows it: its process, what it said, and how fast its stages went."""

    out_dir: Path
    plan: list[tuple[str, int]]  # the stages in order, with their epochs
    eval_every: int
    final_evaluations: int  # evaluations after the last epoch: the dataset's, and its companion split's
    key: str  # the config without its epoch counts: jobs with one key run at one speed
    process: subprocess.Popen | None = None
    stop_requested: bool = False
    end: dict | None = None  # the child's last word: {"state", "message", "traceback"}
    step_s: dict[str, float] = field(default_factory=dict)  # seconds per step, per stage
    steps: dict[str, int] = field(default_factory=dict)  # steps per epoch, per stage
    eval_s: float | None = None  # one evaluation (with its checkpoint)
    last_step_at: float = 0.0
    where: str = ""  # the last step reached, e.g. "stage2 epoch 3/30, step 2/5"

    @classmethod
    def of(cls, config: Config, out_dir: Path) -> "_Job":
        from dpmpp.engine.train import COMPANION_SPLITS

        first = config.model.use_text_stage and config.train.stage1_epochs > 0
        plan = ([("stage1", config.train.stage1_epochs)] if first else []) + [("stage2", config.train.epochs)]
        shape = config.to_dict()
        shape["train"] = {k: v for k, v in shape["train"].items() if k not in ("epochs", "stage1_epochs", "eval_every")}
        return cls(
            out_dir,
            plan,
            config.train.eval_every,
            1 + (config.data.name in COMPANION_SPLITS),
            json.dumps(shape, sort_keys=True),
        )

    def evaluations_left(self, stage: str, epoch: int, evaluated: bool) -> int:
        """Evaluations still to come when `stage` is at `epoch` (1-based); `evaluated`: that epoch's is done."""
        last, epochs = self.plan[-1]
        first = 1 if stage != last else epoch + 1 if evaluated else epoch
        every = self.eval_every
        ahead = sum(1 for e in range(first, epochs + 1) if (every and e % every == 0) or e == epochs)
        return ahead + self.final_evaluations


class TrainingJobs:
    """Runs `dpmpp.engine.train.train` (or `train`, "module:function") in a child process; refuses a second job
    while one runs. The child runs in the idle scheduling class and at `niceness` more than the server, with
    `threads` CPU threads."""

    def __init__(self, train: str = TRAIN, threads: int = 1, niceness: int = 10, grace_s: float = 3.0) -> None:
        self.train, self.threads, self.niceness, self.grace_s = train, threads, niceness, grace_s
        self._lock = threading.Lock()
        self._status = JobStatus("idle")
        self._job: _Job | None = None
        self._follower: threading.Thread | None = None
        self._speeds: dict[str, dict] = {}  # config key -> seconds per epoch of each stage, per evaluation

    def status(self) -> JobStatus:
        with self._lock:
            return JobStatus(**{**self._status.__dict__, "history": list(self._status.history)})

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
            if (out_dir / WEIGHTS).exists():
                raise RuntimeError(f"{out_dir.name} already holds a model; choose another name")
            job = _Job.of(config, out_dir)
            job.process = self._spawn(config, out_dir)
            self._job = job
            self._status = JobStatus(
                "running", str(out_dir), "starting", started=time.time(), owner=owner, version=self._status.version + 1
            )
            self._follower = threading.Thread(target=self._follow, args=(job,), daemon=True, name="training-job")
            self._follower.start()
        return self.status()

    def stop(self, requester: str | None = None, override: bool = False) -> JobStatus:
        """Stop the running job after its current step (at most `grace_s` seconds later, then it is ended). Session
        `requester` may stop only the job it started, unless `override` (the teacher); StopRefused otherwise.
        `requester=None` is the server itself."""
        with self._lock:
            job = self._job
            if self._status.state == "running" and job is not None:
                owner = self._status.owner
                if not override and requester is not None and owner is not None and requester != owner:
                    raise StopRefused(
                        "this training was started in another session; only that session or the teacher can stop it"
                    )
                job.stop_requested = True
                _tell(job.process, "stop")
                threading.Thread(target=self._enforce_stop, args=(job.process,), daemon=True).start()
                self._status.state, self._status.message = "stopping", "stopping after the current step"
                self._status.version += 1
        return self.status()

    def wait(self, timeout: float | None = None) -> JobStatus:
        if self._follower is not None:
            self._follower.join(timeout)
        return self.status()

    # ----- the child process -----------------------------------------------------------------------------------
    def _spawn(self, config: Config, out_dir: Path) -> subprocess.Popen:
        threads = str(max(int(self.threads), 1))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
        }
        niceness = min(_niceness() + max(int(self.niceness), 0), 19)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "dpmpp.jobs"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                text=True,
                bufsize=1,
            )
        except OSError as error:
            raise RuntimeError(f"the training process could not start: {error}") from error
        _lower_priority(process.pid, niceness)  # at once, so that even its imports run low; the child does it again
        _LIVE.add(process)
        job = {"config": config.to_dict(), "out_dir": str(out_dir), "train": self.train}
        _tell(process, json.dumps({**job, "threads": int(threads), "niceness": niceness, "grace_s": self.grace_s}))
        return process

    def _enforce_stop(self, process: subprocess.Popen) -> None:
        try:
            process.wait(self.grace_s)
            return
        except subprocess.TimeoutExpired:
            logger.warning("the training process did not stop within %.0f s; ending it", self.grace_s)
        process.terminate()
        try:
            process.wait(2.0)
        except subprocess.TimeoutExpired:
            process.kill()

    def _follow(self, job: _Job) -> None:
        process = job.process
        for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                logger.debug("training process: %s", line.rstrip()[:500])
                continue
            self._receive(job, message)
        returncode = process.wait()
        _LIVE.discard(process)
        for pipe in (process.stdin, process.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        self._finish(job, returncode)

    def _receive(self, job: _Job, message: dict) -> None:
        kind = message.pop("kind", None)
        with self._lock:
            status = self._status
            if kind == "started":
                status.pid = int(message.get("pid", 0))
                status.message = "started: loading the data and building the model"
            elif kind == "event":
                self._on_event(job, ProgressEvent(**message["event"]), time.monotonic())
            elif kind == "end":
                job.end = message
                return
            else:
                return
            status.version += 1

    def _on_event(self, job: _Job, event: ProgressEvent, now: float) -> None:
        status = self._status
        status.stage, status.epoch, status.epochs = event.stage, event.epoch, event.epochs
        status.step, status.steps = event.step, event.steps
        if event.kind == "eval":  # the time it took (with the checkpoint) is what each later evaluation will take
            job.eval_s = max(now - job.last_step_at, 0.0)
            left = (event.epochs - event.epoch) * event.steps * job.step_s.get(event.stage, 0.0)
            status.eta_s, _ = self._remaining(job, event, left, evaluated=True)
            return
        done_left = (event.epochs - event.epoch) * event.steps + event.steps - event.step
        if done_left > 0:
            job.step_s[event.stage] = event.eta_s / done_left
        job.steps[event.stage], job.last_step_at = event.steps, now
        job.where = f"{event.stage} epoch {event.epoch}/{event.epochs}, step {event.step}/{event.steps}"
        status.eta_s, untimed = self._remaining(job, event, event.eta_s, evaluated=False)
        status.images_per_s = event.images_per_s
        status.history.append(
            {
                "step": len(status.history) + 1,
                "stage": event.stage,
                "epoch": event.epoch,
                "accuracy": event.accuracy,
                **event.losses,
            }
        )
        note = f" ({', '.join(untimed)} not timed yet: the ETA leaves it out)" if untimed else ""
        status.message = job.where + note

    def _remaining(self, job: _Job, event: ProgressEvent, stage_left: float, evaluated: bool) -> tuple[float, list]:
        """Seconds left in the whole job: `stage_left` of the current stage, the later stages (timed by an earlier
        job of the same config) and the evaluations to come; and the later stages that have not been timed."""
        names = [name for name, _ in job.plan]
        current = names.index(event.stage) if event.stage in names else len(names) - 1
        known = self._speeds.get(job.key, {})
        seconds, untimed = stage_left, []
        for name, epochs in job.plan[current + 1 :]:
            if name in known.get("epoch_s", {}):
                seconds += epochs * known["epoch_s"][name]
            else:
                untimed.append(name)
        eval_s = job.eval_s if job.eval_s is not None else known.get("eval_s")
        if eval_s:
            seconds += eval_s * job.evaluations_left(names[current], event.epoch, evaluated)
        return seconds, untimed

    def _finish(self, job: _Job, returncode: int) -> None:
        end = job.end or {}
        state = end.get("state") or ("stopped" if job.stop_requested else "failed")
        if state == "finished":
            message = f"finished: {job.out_dir.name}"
        elif state == "stopped":
            saved = mark_stopped_early(job.out_dir, job.where or "before the first step")
            kept = f"{job.out_dir.name} keeps the model saved at {saved}" if saved else "no model was saved"
            message = f"stopped early at {job.where or 'the start'}; {kept}"
        else:
            reason = end.get("message") or f"the training process ended unexpectedly ({_exit_reason(returncode)})"
            logger.error("training failed: %s", end.get("traceback") or reason)
            message = f"failed: {str(reason)[:300]}"
        speeds = self._speeds.setdefault(job.key, {"epoch_s": {}})
        speeds["epoch_s"].update({stage: job.step_s[stage] * job.steps[stage] for stage in job.step_s})
        if job.eval_s is not None:
            speeds["eval_s"] = job.eval_s
        with self._lock:
            self._status.state, self._status.message = state, message
            if state != "finished":
                self._status.eta_s = 0.0
            self._status.version += 1


def mark_stopped_early(out_dir: str | Path, where: str) -> str | None:
    """After a stopped training: say "stopped early" in `out_dir`'s metrics.json, where a model was saved, and
    remove temporary files a killed write left. Returns what the saved model is ("stage-2 epoch 3 of 30"), or None
    when the run saved none."""
    out_dir = Path(out_dir)
    for leftover in out_dir.glob(".*.tmp") if out_dir.is_dir() else []:
        leftover.unlink(missing_ok=True)
    if not (out_dir / WEIGHTS).is_file():
        return None
    path = out_dir / METRICS
    try:
        metrics = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        metrics = {}
    epoch = metrics.get("epoch")
    try:
        epochs = json.loads((out_dir / "config.json").read_text())["train"]["epochs"]
    except (OSError, ValueError, KeyError, TypeError):
        epochs = "?"
    saved = "the end of stage 1, before any stage-2 epoch" if epoch == 0 else f"stage-2 epoch {epoch} of {epochs}"
    metrics["stopped_early"] = {"stopped_at": where, "saved": saved}
    metrics["note"] = f"stopped early at {where}; these weights are those saved at {saved}"
    write_json(path, metrics)
    return saved


def _tell(process: subprocess.Popen | None, line: str) -> None:
    if process is None or process.stdin is None:
        return
    try:
        process.stdin.write(line + "\n")
        process.stdin.flush()
    except (OSError, ValueError):  # the child has already ended
        pass


def _lower_priority(pid: int, niceness: int) -> None:
    """Give a process (0: this one) what the CPUs leave: Linux's idle scheduling class, where a process runs only
    on a core nobody else wants, and `niceness` as well (where the class is missing, niceness alone)."""
    try:
        if os.getpriority(os.PRIO_PROCESS, pid) < niceness:
            os.setpriority(os.PRIO_PROCESS, pid, niceness)
    except (AttributeError, OSError):
        pass
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        pass


def _niceness() -> int:
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        return 0


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        import signal

        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


_LIVE: set[subprocess.Popen] = set()  # training processes of this server


@atexit.register
def _end_children() -> None:
    """A server that exits ends its trainings (one killed outright is covered by the child's stdin watch)."""
    for process in list(_LIVE):
        process.terminate()
    for process in list(_LIVE):
        try:
            process.wait(2.0)
        except subprocess.TimeoutExpired:
            process.kill()


# ----- the child: `python -m dpmpp.jobs` -----------------------------------------------------------------------
def _resolve(reference: str):
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def _listen(stop: threading.Event, grace_s: float) -> None:
    """Set `stop` on a "stop" line; when the server is gone (stdin closed), stop, and exit after `grace_s`."""
    for line in sys.stdin:
        if line.strip() == "stop":
            stop.set()
    stop.set()
    time.sleep(grace_s)
    os._exit(3)


def worker_main() -> None:
    """Run the job read from stdin; report on the original stdout (anything else printed goes to stderr)."""
    report = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    logging.basicConfig(level=logging.WARNING)
    spec = json.loads(sys.stdin.readline())
    _lower_priority(0, spec["niceness"])
    import torch

    torch.set_num_threads(spec["threads"])
    stop = threading.Event()
    threading.Thread(target=_listen, args=(stop, spec["grace_s"]), daemon=True).start()

    def send(kind: str, **fields) -> None:
        try:
            report.write(json.dumps({"kind": kind, **fields}) + "\n")
        except (OSError, ValueError):  # the server is gone
            stop.set()

    send("started", pid=os.getpid(), niceness=_niceness(), threads=torch.get_num_threads())
    try:
        train = _resolve(spec["train"])
        config = Config.from_dict(spec["config"])
        report_event = lambda event: send("event", event=asdict(event))
        train(config, spec["out_dir"], callback=report_event, should_stop=stop.is_set)
        send("end", state="finished")
    except TrainingStopped:
        send("end", state="stopped")
    except Exception as error:  # noqa: BLE001 - reported to the server, which shows it
        send("end", state="failed", message=str(error)[:300], traceback=traceback.format_exc()[-4000:])
    report.flush()
    # At once: an interpreter shutdown would wait on the thread blocked reading stdin. Every file is already written.
    os._exit(0)


if __name__ == "__main__":
    worker_main()
