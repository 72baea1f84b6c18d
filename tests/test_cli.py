"""The command line speaks to people: an expected error is one line on stderr and exit status 2, `--debug` shows
its traceback, a bug still shows one; long commands show their progress on stderr."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dpmpp import cli
from dpmpp.paths import ASSETS, DEFAULT_CHECKPOINT
from tests.test_config import edited_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dpmpp", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2 and exactly one line on stderr, `error: ...`, holding every fragment; no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def an_image() -> str:
    return str(next((ASSETS / "pets09_occ").rglob("*.jpg")))


# ----- expected errors, through `python -m dpmpp` --------------------------------------------------------------
def test_a_bad_set_value_names_the_field_and_the_type(tmp_path):
    line = assert_one_line_error(run_cli("train", "--set", "train.epochs=ten", "--out", str(tmp_path / "run")))
    assert line == "error: train.epochs must be an integer; got 'ten'"
    assert not (tmp_path / "run").exists()


def test_a_bad_set_choice_names_the_allowed_values(tmp_path):
    result = run_cli("train", "--set", "model.backbone=resnet50", "--out", str(tmp_path / "run"))
    assert_one_line_error(result, "model.backbone must be one of ('clip', 'osnet_x0_25', 'omz_0277'); got 'resnet50'")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--set", "nonsense"], "override 'nonsense' must look like section.field=value"),
        (["--set", "data.flip_prob=2"], "data.flip_prob must be between 0 and 1; got 2"),
        (["--epochs", "0"], "train.epochs must be at least 1; got 0"),
        (["--config", "no_such_preset"], "unknown preset 'no_such_preset'; available: "),
    ],
)
def test_other_config_mistakes_are_one_line(args, fragment, tmp_path):
    assert_one_line_error(run_cli("train", *args, "--out", str(tmp_path / "run")), fragment)


def test_missing_clip_weights(tmp_path):
    result = run_cli("train", "--pretrained", "no-such-tag", "--epochs", "1", "--out", str(tmp_path / "run"))
    assert_one_line_error(result, "CLIP weights 'dpmpp-tiny'/'no-such-tag' are not on this machine", "--pretrained")


def test_a_dataset_folder_in_another_layout(tmp_path):
    result = run_cli("eval", "--baseline", "hsv", "--data", "pets09_occ", "--root", str(tmp_path))
    assert_one_line_error(result, "pets09_occ: expected", "manifest.csv")
    result = run_cli("eval", "--baseline", "hsv", "--data", "pets09_occ", "--root", str(tmp_path / "absent"))
    assert_one_line_error(result, "is not a folder")


def test_an_unknown_dataset_name(tmp_path):
    for root in ([], ["--root", str(tmp_path)]):
        result = run_cli("eval", "--baseline", "hsv", "--data", "no_such_dataset", *root)
        assert_one_line_error(result, "unknown dataset 'no_such_dataset'; registered: ", "pets09_occ")


def test_a_folder_that_is_not_a_checkpoint(tmp_path):
    result = run_cli("embed", "--checkpoint", str(tmp_path), an_image(), "--out", str(tmp_path / "out.npz"))
    assert_one_line_error(result, "not a checkpoint folder", "config.json")


def test_a_checkpoint_whose_config_has_a_bad_value(tmp_path):
    folder = edited_checkpoint(tmp_path / "edited", "model.prototype_init", "from_text")
    result = run_cli("embed", "--checkpoint", str(folder), an_image(), "--out", str(tmp_path / "out.npz"))
    assert_one_line_error(result, "model.prototype_init must be one of ('text', 'text_centred', 'random')")


def test_a_missing_peer_runtime(tmp_path):
    shadow = tmp_path / "shadow" / "openvino"  # an `openvino` that cannot be imported hides the installed one
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("openvino is hidden in this test")\n')
    path = os.pathsep.join(p for p in (str(shadow.parent), os.environ.get("PYTHONPATH", "")) if p)
    result = run_cli("bench", "proximity", "--peer", "omz-0288", env={"PYTHONPATH": path})
    assert_one_line_error(result, "need OpenVINO", "pip install openvino")


def test_an_unknown_peer(tmp_path):
    assert_one_line_error(run_cli("bench", "proximity", "--peer", "no-such-peer"), "unknown --peer", "omz-0277")


def test_an_image_that_cannot_be_read(tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_text("not an image")
    result = run_cli("embed", str(garbage), "--out", str(tmp_path / "out.npz"))
    assert_one_line_error(result, "garbage.png: not a readable image", "PNG")
    result = run_cli("embed", str(tmp_path / "absent.png"), "--out", str(tmp_path / "out.npz"))
    assert_one_line_error(result, "absent.png: no such image file")
    assert not (tmp_path / "out.npz").exists()


def test_a_missing_file(tmp_path):
    result = run_cli("bench", "grid", "--grid", str(tmp_path / "absent.json"))
    assert_one_line_error(result, f"{tmp_path / 'absent.json'}: No such file or directory")


def test_a_command_missing_what_it_needs(tmp_path):
    result = run_cli("build-data", "pets09", "--out", str(tmp_path / "built"))
    assert_one_line_error(result, "build-data pets09 needs --video, --gt, --groups")
    assert_one_line_error(run_cli("eval"), "eval needs --checkpoint DIR or --baseline NAME")


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "train", "--set", "train.epochs=ten", "--out", str(tmp_path / "run"))
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "ConfigError: train.epochs must be an integer; got 'ten'" in result.stderr
    result = run_cli("--debug", "embed", "--checkpoint", str(tmp_path), an_image(), "--out", str(tmp_path / "o.npz"))
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "CheckpointError" in result.stderr


def test_an_unexpected_error_is_a_bug_and_shows_its_traceback(tmp_path):
    script = (
        "import sys\n"
        "from dpmpp import cli\n"
        "def broken(args):\n"
        "    raise RuntimeError('a bug')\n"
        "cli.cmd_eval = broken\n"
        "sys.exit(cli.main(['eval', '--baseline', 'hsv']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env={**os.environ}, timeout=300
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RuntimeError: a bug" in result.stderr
    assert "error: " not in result.stderr.splitlines()[0]


# ----- which errors are expected, and how they read ------------------------------------------------------------
def test_the_expected_errors_are_the_users_and_the_rest_are_bugs():
    from dpmpp.config import ConfigError
    from dpmpp.data.datasets import DatasetLayoutError, UnknownDatasetError
    from dpmpp.data.images import ImageLoadError
    from dpmpp.engine.checkpoint import CheckpointError
    from dpmpp.engine.loop import NonFiniteLossError
    from dpmpp.model.backbone import PretrainedWeightsMissing
    from dpmpp.model.peers import PeerUnavailable

    for error in (
        ConfigError("x"),
        DatasetLayoutError("x"),
        UnknownDatasetError("x"),
        ImageLoadError("x"),
        CheckpointError("x"),
        NonFiniteLossError("x"),
        PretrainedWeightsMissing("x"),
        PeerUnavailable("x"),
        FileNotFoundError(2, "No such file or directory", "a.json"),
        cli.UsageError("x"),
    ):
        assert cli.is_expected(error), error
    for error in (ValueError("x"), RuntimeError("x"), KeyError("x"), TypeError("x"), AttributeError("x")):
        assert not cli.is_expected(error), error


def test_an_error_reads_as_one_line():
    from dpmpp.data.datasets import UnknownDatasetError

    assert cli.error_line(ValueError("first line.\nsecond  line.")) == "first line. second line."
    assert cli.error_line(UnknownDatasetError("unknown dataset 'x'")) == "unknown dataset 'x'"
    assert cli.error_line(KeyError("unknown peer 'x'")) == "unknown peer 'x'"
    assert cli.error_line(FileNotFoundError(2, "No such file or directory", "a.json")) == (
        "a.json: No such file or directory"
    )


def test_main_returns_2_for_an_expected_error_and_raises_a_bug(monkeypatch, capsys, tmp_path):
    out = str(tmp_path / "unused")  # never written: both calls fail before training
    assert cli.main(["train", "--set", "train.epochs=ten", "--out", out]) == 2
    assert capsys.readouterr().err == "error: train.epochs must be an integer; got 'ten'\n"

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "cmd_train", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["train", "--out", out])


# ----- progress ------------------------------------------------------------------------------------------------
class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_status_line_is_redrawn_on_a_terminal_and_written_as_lines_elsewhere():
    terminal = Terminal()
    line = cli.StatusLine(terminal)
    line.show("a longer text")
    line.show("short")
    line.close()
    assert terminal.getvalue() == "\ra longer text\rshort        \n"

    log = io.StringIO()
    line = cli.StatusLine(log, every=3600)
    line.show("too soon")  # a quick command leaves a log alone
    line.show("the end", force=True)
    line.close()
    assert log.getvalue() == "the end\n"
    line = cli.StatusLine(log, every=0)
    line.show("every time")
    assert log.getvalue() == "the end\nevery time\n"


def test_a_counter_shows_a_bar_on_a_terminal():
    terminal = Terminal()
    with cli.Counter("embed", 4, stream=terminal) as counter:
        counter.advance(2)
        counter.advance(2)
    drawn = terminal.getvalue()
    assert "embed [############............] 2/4 images" in drawn
    assert "embed [########################] 4/4 images" in drawn
    assert drawn.endswith("\n")
    log = io.StringIO()
    with cli.Counter("embed", 4, stream=log) as counter:
        counter.advance(4)
    assert log.getvalue() == ""  # a quick run writes nothing into a log


def test_an_activity_shows_how_long_a_command_has_run():
    terminal = Terminal()
    with cli.Activity("bench speed", stream=terminal, interval=0.01):
        time.sleep(0.2)
    assert "\rbench speed: running for 0 s" in terminal.getvalue()
    assert terminal.getvalue().endswith("\n")


def test_a_log_record_starts_below_a_progress_line():
    import logging

    terminal = Terminal()
    line = cli.StatusLine(terminal)
    handler = cli._LineAwareHandler(terminal)
    line.show("eval [#...] 1/9")
    handler.emit(logging.LogRecord("dpmpp", logging.WARNING, __file__, 1, "careful", None, None))
    assert terminal.getvalue() == "\reval [#...] 1/9\ncareful\n"


def step(epoch: int, step_: int, stage: str = "stage2") -> SimpleNamespace:
    return SimpleNamespace(
        kind="step",
        stage=stage,
        epoch=epoch,
        epochs=2,
        step=step_,
        steps=3,
        losses={"total": 1.0},
        accuracy=None,
        images_per_s=10.0,
        eta_s=60.0,
    )


def test_training_progress_is_a_bar_on_a_terminal_and_a_line_per_epoch_elsewhere():
    evaluation = SimpleNamespace(
        kind="eval", epoch=2, metrics={"pets09_occ": {"masked": {"rank1": 0.5, "mAP": 0.25, "mINP": 0.1}}}
    )
    log = io.StringIO()
    printer = cli.ProgressPrinter(log)
    for epoch in (1, 2):
        for index in (1, 2, 3):
            printer(step(epoch, index))
    printer(evaluation)
    printer.close()
    lines = log.getvalue().splitlines()
    assert [line.split(" [")[0] for line in lines[:2]] == ["stage2 1/2", "stage2 2/2"]
    assert lines[2] == "  eval epoch 2 pets09_occ masked: rank-1 50.0 mAP 25.0 mINP 10.0"
    assert len(lines) == 3

    terminal = Terminal()
    printer = cli.ProgressPrinter(terminal)
    printer(step(1, 1))
    printer(step(1, 2))
    printer(evaluation)
    assert terminal.getvalue().count("\rstage2 1/2 [") == 2
    assert "\n  eval epoch 2 pets09_occ masked" in terminal.getvalue()


def test_counted_embedding_gives_the_features_of_a_plain_pipeline():
    from dpmpp.api import Pipeline

    images = [str(p) for p in sorted((ASSETS / "pets09_occ").rglob("*.jpg"))[:5]]
    plain = Pipeline.from_checkpoint(DEFAULT_CHECKPOINT, device="cpu").embed(images, batch_size=2)
    pipeline = cli._pipeline(str(DEFAULT_CHECKPOINT), "cpu")
    args = SimpleNamespace(quiet=False)
    terminal = Terminal()
    with cli._counting(pipeline, args, "embed", len(images)):
        pipeline.progress.line = cli.StatusLine(terminal)
        counted = pipeline.embed(images, batch_size=2)
    assert pipeline.progress is None
    assert "5/5 images" in terminal.getvalue()
    np.testing.assert_array_equal(counted.features, plain.features)
    np.testing.assert_array_equal(counted.masks, plain.masks)


def test_embed_writes_its_file(tmp_path, capsys):
    images = [str(p) for p in sorted((ASSETS / "pets09_occ").rglob("*.jpg"))[:3]]
    assert cli.main(["embed", *images, "--out", str(tmp_path / "out.npz"), "--device", "cpu"]) == 0
    assert f"wrote 3 features and masks to {tmp_path / 'out.npz'}" in capsys.readouterr().out
    with np.load(tmp_path / "out.npz") as saved:
        assert saved["features"].shape[0] == 3 and list(saved["paths"]) == images
