"""Training configs built from the app's choices, and the single background job."""

import pytest

from dpmpp.jobs import COMPONENTS, training_config


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
