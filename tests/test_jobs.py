"""Training configs built from the app's choices, and the single background job (a child process)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpmpp.config import load_preset
from dpmpp.engine.loop import ProgressEvent
from dpmpp.jobs import COMPONENTS, StopRefused, TrainingJobs, _Job, training_config
from dpmpp.model_card import model_card_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_switches_map_to_config_fields(tmp_path):
    every = training_config("pets09_occ", "", "tiny", 3, list(COMPONENTS), None)
    assert every.train.epochs == 3 and every.model.use_mask and every.aug.patch_transfer
    assert every.loss.orth_weight > 0
    none = training_config("pets09_occ", "", "tiny", 3, [], None)
    assert not (none.model.use_mask or none.model.use_text_stage or none.aug.patch_transfer)
    assert not (none.aug.occlusion_pairing or none.aug.class_ignoring) and none.loss.orth_weight == 0
    with pytest.raises(ValueError, match="unknown components"):
        training_config("pets09_occ", "", "tiny", 3, ["dropout"], None)


def test_user_datasets_must_lie_inside_the_data_root(tmp_path):
    (tmp_path / "mine").mkdir()
    config = training_config("manifest", "mine", "tiny", 1, [], tmp_path)
    assert config.data.root == str((tmp_path / "mine").resolve())
    with pytest.raises(ValueError, match="inside the data root"):
        training_config("manifest", "../..", "tiny", 1, [], tmp_path)
    with pytest.raises(ValueError, match="--data-root"):
        training_config("manifest", "mine", "tiny", 1, [], None)


# ----- the job's process ------------------------------------------------------------------------------------------
def wait_for(condition, timeout: float = 60.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"not within {timeout} s")


def started(jobs: TrainingJobs):
    status = jobs.status()
    return status if status.state != "running" or status.history else None


def test_a_training_runs_in_a_niced_child_and_only_its_owner_stops_it(tmp_path):
    jobs = TrainingJobs("tests.training_fakes:endless")
    jobs.start(load_preset("tiny"), tmp_path / "run", owner="alice")
    status = wait_for(lambda: started(jobs))
    assert status.state == "running" and status.pid not in (0, os.getpid())
    assert int((tmp_path / "run" / "pid").read_text()) == status.pid  # the training itself ran there
    assert os.getpriority(os.PRIO_PROCESS, status.pid) >= min(os.getpriority(os.PRIO_PROCESS, 0) + 10, 19)
    if hasattr(os, "SCHED_IDLE"):  # Linux: it runs only on cores the server leaves idle
        assert os.sched_getscheduler(status.pid) == os.SCHED_IDLE
    with pytest.raises(StopRefused, match="another session"):
        jobs.stop(requester="bob")
    assert jobs.status().state == "running"
    asked = time.monotonic()
    assert jobs.stop(requester="alice").state == "stopping"
    assert jobs.wait(timeout=10).state == "stopped" and time.monotonic() - asked < 3
    assert "stopped early" in jobs.status().message and "no model was saved" in jobs.status().message
    with pytest.raises(ProcessLookupError):
        os.kill(status.pid, 0)


def test_a_failure_in_the_child_is_reported_with_its_message(tmp_path):
    jobs = TrainingJobs("tests.training_fakes:broken")
    jobs.start(load_preset("tiny"), tmp_path / "run")
    status = jobs.wait(timeout=60)
    assert status.state == "failed" and "the dataset has no person in it" in status.message


def test_a_child_that_ignores_the_stop_is_ended_after_the_grace_period(tmp_path):
    jobs = TrainingJobs("tests.training_fakes:stubborn", grace_s=1.0)
    jobs.start(load_preset("tiny"), tmp_path / "run", owner="alice")
    wait_for(lambda: started(jobs))
    asked = time.monotonic()
    jobs.stop(requester="alice")
    assert jobs.wait(timeout=10).state == "stopped" and time.monotonic() - asked < 4


def test_a_killed_server_leaves_no_training_behind(tmp_path):
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from dpmpp.config import load_preset; from dpmpp.jobs import TrainingJobs\n"
            "jobs = TrainingJobs('tests.training_fakes:endless', grace_s=1.0)\n"
            f"jobs.start(load_preset('tiny'), {str(tmp_path / 'run')!r})\n"
            "while not jobs.status().history: time.sleep(0.05)\n"
            "print(jobs.status().pid, flush=True); time.sleep(600)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(server.stdout.readline())
    server.send_signal(signal.SIGKILL)
    server.wait()
    wait_for(lambda: not alive(child), timeout=10)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_a_real_training_stops_within_seconds_in_either_stage(fast_config, tmp_path, stage):
    fast_config.train.stage1_epochs = 200 if stage == "stage1" else 1
    fast_config.train.epochs = 200
    jobs, out = TrainingJobs(), tmp_path / "run"
    jobs.start(fast_config, out, owner="alice")
    wait_for(lambda: jobs.status().stage == stage or jobs.status().state != "running", timeout=180)
    asked = time.monotonic()
    jobs.stop(requester="alice")
    status = jobs.wait(timeout=15)
    assert status.state == "stopped" and time.monotonic() - asked < 3, status.message
    assert status.message.startswith(f"stopped early at {stage} epoch 1/")
    if stage == "stage1":
        assert "no model was saved" in status.message and not (out / "model.safetensors").exists()
        return
    assert "run keeps the model saved at the end of stage 1" in status.message
    metrics = json.loads((out / "metrics.json").read_text())
    assert "stopped early" in metrics["note"] and metrics["stopped_early"]["stopped_at"].startswith("stage2 epoch 1/")
    assert "**stopped early** at stage2 epoch 1/200" in model_card_markdown(out)


def test_the_eta_covers_the_whole_job(tmp_path):
    config = load_preset("tiny")  # pets09_occ: the final evaluation also scores its companion split
    config.train.stage1_epochs, config.train.epochs, config.train.eval_every = 2, 3, 0
    jobs = TrainingJobs()

    def step(job, stage, epoch, epochs, index, eta_s, now):
        jobs._on_event(job, ProgressEvent(stage, epoch, epochs, index, 4, eta_s=eta_s), now)
        return jobs.status()

    first = _Job.of(config, tmp_path / "first")
    status = step(first, "stage1", 1, 2, 1, 7.0, now=0.0)  # 7 steps left at 1 s
    assert status.eta_s == 7.0 and "stage2 not timed yet" in status.message
    status = step(first, "stage2", 1, 3, 1, 22.0, now=10.0)  # 11 steps left at 2 s; no evaluation timed yet
    assert status.eta_s == 22.0 and "not timed" not in status.message
    jobs._on_event(first, ProgressEvent("stage2", 3, 3, 4, 4, kind="eval"), 15.0)  # an evaluation takes 5 s
    assert jobs.status().eta_s == 2 * 5.0  # the final one and its companion's are left
    first.end = {"state": "finished"}
    jobs._finish(first, 0)
    config.train.epochs = 5  # another job of the same config, longer: its stage 2 is timed by the first job
    second = _Job.of(config, tmp_path / "second")
    status = step(second, "stage1", 1, 2, 1, 7.0, now=20.0)
    assert status.eta_s == 7.0 + 5 * (4 * 2.0) + 5.0 * (1 + 2) and "not timed" not in status.message


def test_the_model_card_says_how_much_patch_transfer_mixed(tmp_path):
    import shutil

    from dpmpp.paths import DEFAULT_CHECKPOINT

    folder = tmp_path / "card"
    shutil.copytree(DEFAULT_CHECKPOINT, folder)
    assert "patch transfer on (how much it mixed was not recorded)" in model_card_markdown(folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    for record, expected in (
        ([{"epoch": 2, "mixed": 0.0, "guide_max": 0.46}], "on, mixed 0 % in epoch 2 (**never mixed**"),
        ([{"epoch": 2, "mixed": 0.5118, "guide_max": 0.49}], "on, mixed 51 % in epoch 2, pairing"),
    ):
        (folder / "metrics.json").write_text(json.dumps({**metrics, "patch_transfer": record}))
        assert expected in model_card_markdown(folder)
