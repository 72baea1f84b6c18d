"""The config checks itself: typed fields, one `validate()` on every load and after `--set` overrides."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Literal, get_args, get_origin, get_type_hints

import pytest

from dpmpp.config import (
    CHOICES,
    PRESET_DIR,
    Config,
    ConfigError,
    apply_overrides,
    check_choice,
    load_preset,
    preset_names,
)
from dpmpp.paths import DEFAULT_CHECKPOINT

# Every field that takes one of a few values, and those values: the config must declare exactly these.
KNOWN_CHOICES = {
    "model.backbone": ("clip", "osnet_x0_25", "omz_0277"),
    "model.prototype_init": ("text", "text_centred", "random"),
    "model.sie_tokens": ("all", "cls"),
    "loss.i2t_feature": ("post_neck", "pre_neck"),
    "aug.transfer_region": ("partner", "anchor_person"),
    "aug.class_ignoring": (True, False, "auto"),
    "aug.saliency_source": ("auto", "head"),
    "train.schedule": ("step", "cosine", "constant"),
}
# values valid only with other settings (checked by test_the_omz_preset_refuses_other_input_sizes...)
NEEDS = {("model.backbone", "omz_0277"): ["data.height=256", "data.width=128"]}


def literal_fields() -> dict[str, tuple]:
    """The Literal-typed fields, read from the dataclasses' own type hints (independently of dpmpp.config)."""
    found = {}
    sections = get_type_hints(Config)
    for section in (f.name for f in dataclasses.fields(Config) if f.name != "preset"):
        for name, hint in get_type_hints(sections[section]).items():
            arms = get_args(hint) if get_origin(hint) is not Literal else (hint,)
            literals = [arm for arm in arms if get_origin(arm) is Literal]
            if get_origin(hint) is Literal or literals:
                found[f"{section}.{name}"] = hint
    return found


def rejected(overrides: list[str], preset: str = "tiny") -> str:
    with pytest.raises(ConfigError) as caught:
        apply_overrides(load_preset(preset), overrides)
    return str(caught.value)


def test_the_choice_fields_are_typed_with_their_allowed_values():
    assert set(literal_fields()) == set(KNOWN_CHOICES)
    assert CHOICES == KNOWN_CHOICES


@pytest.mark.parametrize("name", sorted(KNOWN_CHOICES))
def test_every_literal_field_rejects_a_bad_value_naming_the_allowed_values(name):
    message = rejected([f"{name}=no_such_value"])
    assert message.startswith(f"{name} must be one of ")
    assert message.endswith("got 'no_such_value'")
    for allowed in KNOWN_CHOICES[name]:
        assert repr(allowed) in message


@pytest.mark.parametrize("name", sorted(KNOWN_CHOICES))
def test_every_allowed_value_of_a_literal_field_is_accepted(name):
    for allowed in KNOWN_CHOICES[name]:
        value = json.dumps(allowed) if not isinstance(allowed, str) else allowed
        companions = NEEDS.get((name, allowed), [])
        config = apply_overrides(load_preset("tiny"), [*companions, f"{name}={value}"])
        section, field = name.split(".")
        assert getattr(getattr(config, section), field) == allowed


def test_choices_compare_by_type_too():
    # 1 == True in Python, but 1 is not one of (True, False, "auto")
    assert "aug.class_ignoring must be one of (True, False, 'auto'); got 1" == rejected(["aug.class_ignoring=1"])
    assert "got 0" in rejected(["aug.class_ignoring=0"])


def test_check_choice_serves_the_modules_that_check_a_field_where_they_use_it():
    check_choice("model.sie_tokens", "cls")
    with pytest.raises(ValueError, match=r"model\.sie_tokens must be one of \('all', 'cls'\); got 'patches'"):
        check_choice("model.sie_tokens", "patches")
    with pytest.raises(ConfigError, match="loss.i2t_feature"):
        check_choice("loss.i2t_feature", "before")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ('train.epochs="ten"', "train.epochs must be an integer; got 'ten'"),
        ("train.epochs=ten", "train.epochs must be an integer; got 'ten'"),
        ("train.epochs=2.5", "train.epochs must be an integer; got 2.5"),
        ("train.epochs=true", "train.epochs must be an integer; got True"),
        ("data.flip_prob=half", "data.flip_prob must be a finite number; got 'half'"),
        ("loss.label_smoothing=NaN", "loss.label_smoothing must be a finite number; got nan"),
        ("model.sie_coef=Infinity", "model.sie_coef must be a finite number; got inf"),
        ("model.use_mask=1", "model.use_mask must be true or false; got 1"),
        ("model.use_mask=yes", "model.use_mask must be true or false; got 'yes'"),
        ('model.mask_blocks=[1, "a"]', "model.mask_blocks must be a list of integers; got [1, 'a']"),
        ("model.mask_blocks=3", "model.mask_blocks must be a list of integers; got 3"),
        ("loss.i2t_scale=big", "loss.i2t_scale must be a finite number or null; got 'big'"),
        ("data.root=5", "data.root must be a string or null; got 5"),
        ("model.clip_model=null", "model.clip_model must be a string; got None"),
        ("aug.max_shift=1.5", "aug.max_shift must be an integer or null; got 1.5"),
    ],
)
def test_type_errors_name_the_field_and_the_type(override, message):
    assert rejected([override]) == message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.flip_prob=1.5", "data.flip_prob must be between 0 and 1; got 1.5"),
        ("data.erasing_prob=-0.1", "data.erasing_prob must be between 0 and 1; got -0.1"),
        ("aug.transfer_prob=2", "aug.transfer_prob must be between 0 and 1; got 2"),
        ("loss.saliency_keep=1.01", "loss.saliency_keep must be between 0 and 1; got 1.01"),
        ("train.epochs=0", "train.epochs must be at least 1; got 0"),
        ("train.stage1_epochs=-1", "train.stage1_epochs must be at least 0; got -1"),
        ("train.stage1_batch_size=0", "train.stage1_batch_size must be at least 1; got 0"),
        ("eval.batch_size=0", "eval.batch_size must be at least 1; got 0"),
        ("data.num_pids=0", "data.num_pids must be at least 1; got 0"),
        ("data.height=0", "data.height must be at least 16; got 0"),
        ("loss.id_scale=0", "loss.id_scale must be greater than 0; got 0"),
        ("loss.i2t_scale=-30", "loss.i2t_scale must be greater than 0; got -30"),
        ("loss.triplet_weight=-1", "loss.triplet_weight must be at least 0; got -1"),
        ("train.lr_head=-0.001", "train.lr_head must be at least 0; got -0.001"),
        ("model.mask_blocks=[]", "model.mask_blocks must not be empty"),
        ("model.mask_blocks=[-1, 3]", "model.mask_blocks entries must be at least 0; got [-1, 3]"),
        ("train.milestones=[10, -5]", "train.milestones entries must be at least 0; got [10, -5]"),
        ("aug.max_shift=-1", "aug.max_shift must be at least 0; got -1"),
    ],
)
def test_numbers_outside_their_range_are_refused(override, message):
    assert rejected([override]) == message


@pytest.mark.parametrize(
    "override",
    [
        "data.flip_prob=0",
        "data.flip_prob=1",
        "train.stage1_epochs=0",
        "train.eval_every=0",
        "train.milestones=[]",
        "loss.i2t_scale=null",
        "loss.triplet_margin=null",
        "loss.id_label_smoothing=0",
        "aug.max_shift=0",
        "train.grad_clip=null",
        "loss.distill_weight=0",
        "train.lr_encoder=0",
    ],
)
def test_values_on_the_edge_of_a_range_are_accepted(override):
    apply_overrides(load_preset("tiny"), [override])


def test_a_vit_input_must_be_a_multiple_of_its_patch_size():
    assert rejected(["data.height=100"]) == (
        "data.height must be a multiple of 8, the patch size of dpmpp-tiny; got 100"
    )
    assert "multiple of 16, the patch size of ViT-B-16-quickgelu" in rejected(["data.width=120"], "vit_b16")
    apply_overrides(load_preset("osnet"), ["data.height=100"])  # an OSNet has no patches
    apply_overrides(load_preset("tiny"), ["data.height=136", "data.width=72"])


def test_combinations_are_checked_after_all_overrides():
    assert "model.camera_embedding (SIE) needs the clip backbone" in rejected(["model.camera_embedding=true"], "osnet")
    # checked on the result, not override by override: the order does not matter
    apply_overrides(load_preset("osnet"), ["model.camera_embedding=true", "model.backbone=clip"])
    assert "loss.distill_weight=1 needs loss.distill_teacher" in rejected(["loss.distill_weight=1"])
    apply_overrides(load_preset("tiny"), ["loss.distill_weight=1", "loss.distill_teacher=omz-0277"])


def test_set_validates_fields_set_directly_before_it():
    config = load_preset("tiny")
    config.train.epochs = 0  # e.g. the CLI's --epochs
    with pytest.raises(ConfigError, match="train.epochs must be at least 1"):
        apply_overrides(config, [])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("nonsense", "override 'nonsense' must look like section.field=value"),
        ("nosection.field=1", "unknown config section 'nosection'"),
        ("train.no_field=1", "unknown config field train.no_field"),
    ],
)
def test_malformed_overrides_are_refused(override, message):
    assert message in rejected([override])


def test_config_errors_are_value_errors():
    assert issubclass(ConfigError, ValueError)  # callers that catch ValueError keep working


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_with_exactly_its_values(name):
    config = load_preset(name)
    expected = Config().to_dict()
    for section, values in json.loads((PRESET_DIR / f"{name}.json").read_text()).items():
        expected[section].update(values)
    expected["preset"] = name
    assert config.to_dict() == expected
    assert config.validate() is config


def test_the_default_config_is_valid():
    Config().validate()


def test_the_bundled_checkpoint_config_loads_with_exactly_its_values():
    data = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())
    data.pop("meta")
    config = Config.from_dict(data)
    for section, values in data.items():
        if section == "preset":
            assert config.preset == values
            continue
        for key, value in values.items():
            assert getattr(getattr(config, section), key) == value, (section, key)

    from dpmpp.engine import checkpoint

    assert checkpoint.read_config(DEFAULT_CHECKPOINT)[0].to_dict() == config.to_dict()


def test_from_dict_validates():
    with pytest.raises(ConfigError, match=r"train\.schedule must be one of \('step', 'cosine', 'constant'\)"):
        Config.from_dict({"train": {"schedule": "linear"}})
    with pytest.raises(ConfigError, match="preset must be a string"):
        Config.from_dict({"preset": 3})
    with pytest.raises(ConfigError, match="must be an object of fields"):
        Config.from_dict({"train": [1, 2]})
    with pytest.raises(ConfigError, match="a config must be an object of sections"):
        Config.from_dict([1, 2])


def test_a_json_config_file_is_validated_on_load(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"aug": {"transfer_region": "everywhere"}}))
    with pytest.raises(ConfigError, match=r"mine\.json: aug\.transfer_region must be one of \('partner'"):
        load_preset(str(path))
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"mine\.json: not a JSON config"):
        load_preset(str(path))
    path.write_text(json.dumps({"train": {"epochs": 3}}))
    assert load_preset(str(path)).train.epochs == 3
    with pytest.raises(ConfigError, match="unknown preset 'no_such_preset'"):
        load_preset("no_such_preset")


def edited_checkpoint(folder: Path, name: str, value) -> Path:
    """A copy of the bundled checkpoint in `folder` whose config.json sets field `name` ("aug.x") to `value`."""
    shutil.copytree(DEFAULT_CHECKPOINT, folder)
    data = json.loads((folder / "config.json").read_text())
    section, field = name.split(".")
    data[section][field] = value
    (folder / "config.json").write_text(json.dumps(data))
    return folder


def test_a_checkpoint_config_is_validated_on_load(tmp_path):
    from dpmpp.engine.checkpoint import CheckpointError, read_config

    folder = edited_checkpoint(tmp_path / "edited", "aug.saliency_source", "grabcut")
    with pytest.raises(CheckpointError, match=r"aug\.saliency_source must be one of \('auto', 'head'\)"):
        read_config(folder)
