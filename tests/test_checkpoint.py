"""Checkpoints: round trip, and clear errors for corrupt, mismatched or disguised files."""

import json
import pickle
import shutil

import numpy as np
import pytest

from dpmpp.api import Pipeline
from dpmpp.config import load_preset
from dpmpp.engine.checkpoint import CheckpointError, save_model
from dpmpp.model.dpmpp import build_model
from dpmpp.paths import ASSETS


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    config = load_preset("tiny")
    model, _ = build_model(config.model, (64, 32), num_classes=4, num_cameras=2, with_text=False)
    meta = {"num_classes": 4, "num_cameras": 2, "image_size": [64, 32], "dataset": "test", "pids": [1, 2, 3, 4]}
    save_model(folder, model, config, meta, {"note": "round trip"})
    return folder, model


def test_round_trip_gives_the_same_features(saved):
    folder, model = saved
    pipeline = Pipeline.from_checkpoint(folder, device="cpu")
    images = sorted((ASSETS / "pets09_occ/crops/query").iterdir())[:3]
    first = pipeline.embed(images)
    model.eval()
    import torch

    with torch.no_grad():
        direct = torch.nn.functional.normalize(model(pipeline.preprocess(images)).proj, dim=1).numpy()
    np.testing.assert_allclose(first.features, direct, atol=1e-6)
    assert first.masks.shape == first.features.shape


def copy(saved, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(saved[0], target)
    return target


def test_truncated_weights(saved, tmp_path):
    folder = copy(saved, tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable or truncated"):
        Pipeline.from_checkpoint(folder, device="cpu")


def test_config_that_does_not_match_the_weights(saved, tmp_path):
    folder = copy(saved, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["meta"]["num_classes"] = 7
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match config.json"):
        Pipeline.from_checkpoint(folder, device="cpu")


def test_missing_file_and_pickle_in_disguise(saved, tmp_path):
    folder = copy(saved, tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        Pipeline.from_checkpoint(folder, device="cpu")
    evil = copy(saved, tmp_path / "evil")

    class Boom:
        def __reduce__(self):
            return (exec, ("open('pwned', 'w').write('x')",))

    (evil / "model.safetensors").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError):
        Pipeline.from_checkpoint(evil, device="cpu")
    assert not (tmp_path / "pwned").exists()


def test_start_from_a_checkpoint_with_other_identities(saved):
    import torch

    from dpmpp.engine.checkpoint import load_compatible_weights

    folder, model = saved
    other, _ = build_model(load_preset("tiny").model, (64, 32), num_classes=6, num_cameras=2, with_text=False)
    skipped = load_compatible_weights(folder, other)
    assert "prototypes" in skipped
    source = model.state_dict()
    for name, tensor in other.state_dict().items():
        if name not in skipped:
            assert torch.equal(tensor, source[name]), name
    with pytest.raises(CheckpointError):
        load_compatible_weights(folder.parent, other)
