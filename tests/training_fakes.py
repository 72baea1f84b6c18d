"""Stand-ins for `dpmpp.engine.train.train` that a training child process (`python -m dpmpp.jobs`) can import."""

import os
import time
from pathlib import Path

from dpmpp.engine.loop import ProgressEvent, TrainingStopped


def endless(config, out_dir, callback=None, should_stop=None):
    """Writes its pid, then one step event every 10 ms until it is told to stop."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "pid").write_text(str(os.getpid()))
    step = 0
    while not should_stop():
        step += 1
        callback(ProgressEvent("stage2", 1, 1, step, 10**6, {"total": 1.0}, images_per_s=100.0, eta_s=60.0))
        time.sleep(0.01)
    raise TrainingStopped()


def stubborn(config, out_dir, callback=None, should_stop=None):
    """Never looks at `should_stop` (like a model being built, or an evaluation)."""
    callback(ProgressEvent("stage2", 1, 1, 1, 10, {"total": 1.0}, eta_s=60.0))
    time.sleep(600)


def broken(config, out_dir, callback=None, should_stop=None):
    raise ValueError("the dataset has no person in it")
