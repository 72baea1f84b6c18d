"""End-to-end training through the CLI and the engine: train -> eval, resume equivalence, NaN stop, DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dpmpp.config import apply_overrides, load_preset
from dpmpp.engine import checkpoint
from dpmpp.engine.loop import NonFiniteLossError, TrainingStopped
from dpmpp.engine.train import Trainer, train
from tests.conftest import FAST

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "dpmpp", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_train_then_eval_through_the_cli(small_data, tmp_path):
    out = tmp_path / "ckpt"
    sets = [item for s in FAST for item in ("--set", s)]
    result = run_cli(
        "train",
        "--config",
        "tiny",
        "--data",
        "manifest",
        "--root",
        str(small_data),
        "--epochs",
        "2",
        "--seed",
        "1",
        *sets,
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stage2 2/2" in result.stderr  # the progress bar reached the end
    for name in ("config.json", "model.safetensors", "text_prototypes.safetensors", "metrics.json"):
        assert (out / name).is_file()
    final = json.loads(result.stdout.strip().splitlines()[-1])
    masked = final["manifest"]["masked"]
    evaluated = run_cli("eval", "--checkpoint", str(out), "--data", "manifest", "--root", str(small_data), "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    again = json.loads(evaluated.stdout)
    assert again["rank1"] == pytest.approx(masked["rank1"]) and again["mAP"] == pytest.approx(masked["mAP"])
    unmasked = json.loads(
        run_cli(
            "eval", "--checkpoint", str(out), "--data", "manifest", "--root", str(small_data), "--json", "--no-mask"
        ).stdout
    )
    assert unmasked["mAP"] == pytest.approx(final["manifest"]["unmasked"]["mAP"])
    image = sorted((ROOT / "assets/pets09_occ/crops/query").iterdir())[0]
    embedded = run_cli("embed", "--checkpoint", str(out), str(image), "--out", str(tmp_path / "f.npz"))
    assert embedded.returncode == 0, embedded.stderr[-2000:]
    arrays = np.load(tmp_path / "f.npz")
    assert arrays["features"].shape == arrays["masks"].shape == (1, 256)


def test_resume_repeats_the_uninterrupted_run(fast_config, tmp_path):
    fast_config.data.num_workers = 0
    train(fast_config, tmp_path / "full")
    last = {}

    def remember(event):
        last.update(stage=event.stage, epoch=event.epoch, step=event.step, steps=event.steps)

    def stop_after_first_stage2_epoch() -> bool:
        return last.get("stage") == "stage2" and last["epoch"] == 1 and last["step"] == last["steps"]

    with pytest.raises(TrainingStopped):
        train(fast_config, tmp_path / "half", callback=remember, should_stop=stop_after_first_stage2_epoch)
    assert checkpoint.load_train_state(tmp_path / "half")["epoch"] == 1
    train(fast_config, tmp_path / "half", resume=True)
    full, resumed = load_file(tmp_path / "full/model.safetensors"), load_file(tmp_path / "half/model.safetensors")
    assert full.keys() == resumed.keys()
    for key in full:
        torch.testing.assert_close(full[key], resumed[key], rtol=1e-4, atol=1e-5, msg=key)
    state = checkpoint.load_train_state(tmp_path / "half")
    assert state["stage"] == "done" and state["epoch"] == 2


def test_non_finite_loss_stops_without_writing(fast_config, tmp_path, monkeypatch):
    import dpmpp.engine.train as training

    def poisoned(*args, **kwargs):  # a loss that overflows, as a diverging run's would
        losses = stage2_losses(*args, **kwargs)
        return {**losses, "id": losses["id"] * float("nan")}

    stage2_losses = training.stage2_losses
    monkeypatch.setattr(training, "stage2_losses", poisoned)
    fast_config.model.use_text_stage = False
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        train(fast_config, tmp_path / "nan")
    assert not (tmp_path / "nan/model.safetensors").exists()


def test_ddp_two_cpu_processes_agree(small_data, tmp_path):
    """torchrun, 2 CPU processes (gloo): after training, both replicas hold identical weights."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        str(ROOT / "tests/ddp_worker.py"),
        str(small_data),
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    # Parameters are kept identical by gradient all-reduce. BatchNorm running statistics are per-rank (DDP
    # broadcasts rank 0's at every forward); rank 0, which writes the checkpoint, holds the ones that count.
    parameters = [k for k in rank0 if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(parameters) > 50
    for key in parameters:
        torch.testing.assert_close(rank0[key], rank1[key], msg=key)
    initial = Trainer(_fast_manifest_config(small_data), tmp_path / "unused").model.state_dict()
    assert any(not torch.equal(initial[k], rank0[k]) for k in rank0)  # training really moved the weights


def _fast_manifest_config(root):
    config = apply_overrides(load_preset("tiny"), FAST + ["data.num_workers=0", "train.epochs=1"])
    config.data.name, config.data.root = "manifest", str(root)
    return config


def test_camera_embedding_is_refused_where_camera_ids_are_tracks(tmp_path):
    config = apply_overrides(load_preset("tiny"), ["model.camera_embedding=true"])
    with pytest.raises(ValueError, match="leak|hand the model the identity"):
        train(config, tmp_path / "sie")


def test_a_crash_while_writing_leaves_the_previous_checkpoint(fast_config, tmp_path, monkeypatch):
    from dpmpp.api import Pipeline
    from dpmpp.engine import checkpoint as checkpoint_module

    fast_config.train.epochs = 1
    train(fast_config, tmp_path / "run")
    before = (tmp_path / "run/model.safetensors").read_bytes()

    def dying_save(tensors, path, metadata=None):
        with open(path, "wb") as handle:
            handle.write(b"half a file")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(checkpoint_module, "save_file", dying_save)
    model = Pipeline.from_checkpoint(tmp_path / "run", device="cpu").model
    with pytest.raises(KeyboardInterrupt):
        checkpoint_module.save_model(tmp_path / "run", model, fast_config, {"num_classes": 0})
    assert (tmp_path / "run/model.safetensors").read_bytes() == before
    assert not list((tmp_path / "run").glob(".*.tmp"))
    Pipeline.from_checkpoint(tmp_path / "run", device="cpu")


def test_sigkill_then_resume_ends_where_an_uninterrupted_run_ends(small_data, tmp_path):
    import signal
    import time as clock

    sets = [item for s in FAST + ["train.epochs=4", "data.num_workers=0"] for item in ("--set", s)]
    base = ["train", "--config", "tiny", "--data", "manifest", "--root", str(small_data), "--quiet", *sets]
    assert run_cli(*base, "--out", str(tmp_path / "full")).returncode == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "dpmpp", *base, "--out", str(tmp_path / "killed")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = None
    for _ in range(600):  # wait for the first stage-2 epoch checkpoint, then kill without warning
        state = checkpoint.load_train_state(tmp_path / "killed") if (tmp_path / "killed").exists() else None
        if state is not None and state["stage"] == "stage2" and state["epoch"] >= 1:
            break
        clock.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = checkpoint.load_train_state(tmp_path / "killed")
    assert killed_at["stage"] == "stage2" and 1 <= killed_at["epoch"] < 4
    from dpmpp.api import Pipeline

    Pipeline.from_checkpoint(tmp_path / "killed", device="cpu")  # the last complete epoch loads
    assert run_cli(*base, "--out", str(tmp_path / "killed"), "--resume").returncode == 0
    assert checkpoint.load_train_state(tmp_path / "killed")["epoch"] == 4
    full, resumed = load_file(tmp_path / "full/model.safetensors"), load_file(tmp_path / "killed/model.safetensors")
    for key in full:  # resuming at an epoch boundary repeats the uninterrupted run
        torch.testing.assert_close(full[key], resumed[key], rtol=1e-4, atol=1e-5, msg=key)


def test_person_masks_reach_the_saliency_loss_only_where_the_dataset_has_them(fast_config, tmp_path):
    assert Trainer(fast_config, tmp_path / "subset").person_masks() is None  # a manifest without a background

    def first_step(overrides: list[str]):
        config = apply_overrides(load_preset("tiny"), overrides)
        stage = Trainer(config, tmp_path / "pets09").stage2()
        batch = next(iter(stage.batches(1)))  # epoch 1: patch transfer is on
        return batch, stage.compute(batch)[0]

    batch, losses = first_step([])
    assert batch["person"].shape == (len(batch["image"]), 1, 128, 64)
    assert "saliency_person" in losses and torch.isfinite(losses["saliency_person"])
    batch, losses = first_step(["aug.saliency_source=head", "loss.saliency_person_weight=0"])
    assert "person" not in batch and "saliency_person" not in losses
    with pytest.raises(ValueError, match="saliency_source"):
        first_step(["aug.saliency_source=grabcut"])


@pytest.mark.parametrize("apart", [False, True])
def test_a_group_clipped_apart_does_not_scale_the_other_steps(apart):
    from dpmpp.engine.loop import Stage, run_stage

    a, b = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(4))
    groups = [{"params": [a]}, {"params": [b], "clip_apart": apart}]
    optimizer = torch.optim.SGD(groups, lr=1.0)
    # a's gradient has norm 2; b's, norm 2000: under one global norm of 1, a's step would shrink 1000-fold
    stage = Stage(
        name="s",
        epochs=1,
        steps_per_epoch=1,
        optimizer=optimizer,
        batches=lambda epoch: [None],
        compute=lambda batch: ({"loss": a.sum() + 1000 * b.sum()}, 1, None),
        weights={"loss": 1.0},
        schedule="step",
        grad_clip=1.0,
    )
    run_stage(stage)
    step_a = a.detach().norm().item()
    assert step_a == pytest.approx(1.0 if apart else 2 / (2000**2 + 4) ** 0.5, rel=1e-4)
    assert b.detach().norm().item() == pytest.approx(1.0, rel=1e-4)


def test_the_saliency_head_is_its_own_group_clipped_apart_only_when_asked(tmp_path):
    def groups(apart: bool):
        config = apply_overrides(load_preset("tiny"), [f"train.clip_saliency_apart={str(apart).lower()}"])
        trainer = Trainer(config, tmp_path / f"pets09_{apart}")
        return {g["name"]: g for g in trainer.parameter_groups()}, trainer.model

    for apart in (False, True):
        named, model = groups(apart)
        saliency_ids = {id(p) for p in model.saliency_head.parameters()}
        assert set(named) == {"encoder", "head", "saliency"} and named["saliency"]["clip_apart"] is apart
        assert {id(p) for p in named["saliency"]["params"]} == saliency_ids
        assert not saliency_ids & {id(p) for p in named["head"]["params"] + named["encoder"]["params"]}
        every = [id(p) for g in named.values() for p in g["params"]]
        assert sorted(every) == sorted(id(p) for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("apart", [False, True])
def test_the_saliency_head_is_inert_exactly_when_clipped_apart(apart, tmp_path):
    """DPM with the saliency head trains on detached tokens: clipped apart, every other weight follows DPM's
    trajectory bit for bit; inside the global norm, the head's gradients change every other step."""
    import dataclasses
    import itertools

    from dpmpp.engine.loop import run_stage

    dpm = ["model.use_text_stage=false", "model.prototype_init=random", "aug.patch_transfer=false", *FAST]

    def trained(overrides: list[str], name: str) -> dict[str, torch.Tensor]:
        trainer = Trainer(apply_overrides(load_preset("tiny"), [*dpm, *overrides]), tmp_path / name)
        stage = trainer.stage2()
        batches = stage.batches
        three_steps = dataclasses.replace(
            stage, epochs=1, batches=lambda epoch: itertools.islice(batches(epoch), 3), on_epoch_end=None
        )
        run_stage(three_steps)
        return {k: v for k, v in trainer.model.state_dict().items() if not k.startswith("saliency_head.")}

    without = trained(["model.saliency_head=false"], "without")
    with_head = trained([f"train.clip_saliency_apart={str(apart).lower()}"], "with")
    assert with_head.keys() == without.keys()
    differing = [k for k in without if not torch.equal(without[k], with_head[k])]
    if apart:
        assert differing == []
    else:
        assert "prototypes" in differing and any(k.startswith("encoder.") for k in differing)


def test_auto_class_ignoring_is_off_exactly_when_silhouettes_guide_the_transfer(tmp_path):
    """Guided by the benchmark's person silhouettes, "auto" trains bit for bit as class-ignoring off; SPT's rule
    (on) changes the weights; guided by the saliency head, "auto" is SPT's rule."""
    import dataclasses
    import itertools

    from dpmpp.engine.loop import run_stage

    def trained(overrides: list[str], name: str) -> dict[str, torch.Tensor]:
        trainer = Trainer(
            apply_overrides(load_preset("tiny"), [*FAST, "train.stage1_epochs=0", *overrides]), tmp_path / name
        )
        stage = trainer.stage2()
        batches = stage.batches
        three_steps = dataclasses.replace(
            stage, epochs=1, batches=lambda epoch: itertools.islice(batches(epoch), 3), on_epoch_end=None
        )
        run_stage(three_steps)
        return trainer.model.state_dict()

    def same(a, b) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    runs = {value: trained([f"aug.class_ignoring={value}"], value.strip('"')) for value in ('"auto"', "false", "true")}
    assert same(runs['"auto"'], runs["false"]) and not same(runs["true"], runs["false"])
    head = {
        value: trained(["aug.saliency_source=head", f"aug.class_ignoring={value}"], "head" + value.strip('"'))
        for value in ('"auto"', "true", "false")
    }
    assert same(head['"auto"'], head["true"]) and not same(head["true"], head["false"])
    with pytest.raises(ValueError, match="aug.class_ignoring must be"):
        Trainer(apply_overrides(load_preset("tiny"), [*FAST, "aug.class_ignoring=1"]), tmp_path / "bad").stage2()


@pytest.mark.parametrize("record", [False, True])
def test_step_events_carry_pre_clip_group_norms_only_when_asked(record):
    from dpmpp.engine.loop import Stage, run_stage

    a, b = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(4))
    optimizer = torch.optim.SGD([{"params": [a], "name": "a"}, {"params": [b]}], lr=1.0)
    events = []
    stage = Stage(
        name="s",
        epochs=1,
        steps_per_epoch=5,  # nominal; the epoch's own batches say 2
        optimizer=optimizer,
        batches=lambda epoch: [None, None],
        compute=lambda batch: ({"loss": a.sum() + 1000 * b.sum()}, 1, None),
        weights={"loss": 1.0},
        schedule="step",
        grad_clip=1.0,
        record_grad_norms=record,
    )
    run_stage(stage, callback=events.append)
    assert [e.steps for e in events] == [2, 2]
    if record:  # before clipping: a's gradient is (1, 1, 1, 1), b's (1000, ...); the unnamed group keeps its index
        assert events[0].grad_norms == pytest.approx({"a": 2.0, "1": 2000.0})
    else:
        assert all(e.grad_norms == {} for e in events)


def test_a_transfer_that_mixes_nothing_is_recorded_and_warned_about(tmp_path, caplog):
    """A saliency guide that never reaches the binarisation threshold finds no person, so patch transfer mixes
    nothing and the run is bit for bit one without it; the epoch's record says so, and a warning names why."""
    import dataclasses
    import itertools

    from dpmpp.engine.loop import run_stage

    def trained(overrides: list[str], name: str) -> Trainer:
        config = apply_overrides(
            load_preset("tiny"), [*FAST, "train.stage1_epochs=0", "aug.saliency_source=head", *overrides]
        )
        trainer = Trainer(config, tmp_path / name)
        stage = trainer.stage2()
        batches = stage.batches
        three_steps = dataclasses.replace(
            stage, epochs=1, batches=lambda epoch: itertools.islice(batches(epoch), 3), on_epoch_end=None
        )
        run_stage(three_steps)
        trainer.log_transfer(1)
        return trainer

    def same(a: Trainer, b: Trainer) -> bool:
        return all(torch.equal(a.model.state_dict()[k], b.model.state_dict()[k]) for k in a.model.state_dict())

    with caplog.at_level("WARNING", logger="dpmpp.engine.train"):
        unreachable = trained(["aug.saliency_threshold=1.0"], "unreachable")
    assert unreachable.transfer_log[0]["mixed"] == 0.0 and unreachable.transfer_log[0]["guide_max"] < 1.0
    assert "mixed none of" in caplog.text and "aug.saliency_threshold=1.00" in caplog.text
    off = trained(["aug.patch_transfer=false"], "off")
    assert off.transfer_log == [] and same(unreachable, off)
    caplog.clear()
    with caplog.at_level("WARNING", logger="dpmpp.engine.train"):
        mixing = trained(["aug.saliency_threshold=0.0", "aug.transfer_prob=1.0"], "mixing")
    assert mixing.transfer_log[0]["mixed"] > 0.5 and "mixed none of" not in caplog.text
    assert not same(mixing, off)
