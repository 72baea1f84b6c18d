"""Configuration as dataclasses: JSON presets in dpmpp/configs, dotted `--set` overrides, saved beside weights.

Every switch the ablation grid (docs/method.md §8) varies is a named field with a one-line comment; choices that
are our reconstruction rather than published fact are marked (R).

A config checks itself in one place, `Config.validate()`, which runs on every load (a preset, a JSON file, a
checkpoint's config.json through `Config.from_dict`) and after `--set` overrides. What a field takes is written
once, beside it: its type hint (`Literal[...]` lists the allowed values) and, for numbers, `bounded(...)`.
A bad value fails there with a `ConfigError` naming the field and what it takes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import types
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

PRESET_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A config section, field or value this project does not accept; the message names it and what is expected."""


@dataclass(frozen=True)
class Bounds:
    """The numeric range of a field, or of each entry of a list field. None: no bound on that side."""

    low: float | None = None  # value >= low
    high: float | None = None  # value <= high
    above: float | None = None  # value > above
    nonempty: bool = False  # a list field needs at least one entry

    def contains(self, value: float) -> bool:
        return (
            (self.low is None or value >= self.low)
            and (self.high is None or value <= self.high)
            and (self.above is None or value > self.above)
        )

    def expected(self) -> str:
        parts = []
        if self.low is not None and self.high is not None:
            parts.append(f"between {self.low:g} and {self.high:g}")
        elif self.low is not None:
            parts.append(f"at least {self.low:g}")
        elif self.high is not None:
            parts.append(f"at most {self.high:g}")
        if self.above is not None:
            parts.append(f"greater than {self.above:g}")
        return " and ".join(parts)


def bounded(
    default: Any = MISSING,
    *,
    factory: Any = MISSING,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
    nonempty: bool = False,
) -> Any:
    """A dataclass field whose number (each entry, for a list) must lie within the bounds; None always passes."""
    bounds = Bounds(low, high, above, nonempty)
    return field(default=default, default_factory=factory, metadata={"bounds": bounds})


@dataclass
class DataCfg:
    name: str = "pets09_occ"  # registered dataset
    root: str | None = None  # dataset folder; None = the bundled one
    height: int = bounded(256, low=16)  # input height in pixels (a multiple of a ViT's patch size)
    width: int = bounded(128, low=16)  # input width in pixels (likewise)
    num_pids: int = bounded(16, low=1)  # P identities per batch
    num_instances: int = bounded(4, low=1)  # K images per identity
    num_workers: int = bounded(2, low=0)  # data-loader workers
    flip_prob: float = bounded(0.5, low=0, high=1)  # random horizontal flip
    pad: int = bounded(10, low=0)  # padding before the random crop
    erasing_prob: float = bounded(0.0, low=0, high=1)  # random erasing (off: patch transfer supplies occlusion)


@dataclass
class ModelCfg:
    # image encoder: "clip" (open_clip's tower, the paper), "osnet_x0_25" or "omz_0277" (pretrained re-ID)
    backbone: Literal["clip", "osnet_x0_25", "omz_0277"] = "clip"
    clip_model: str = "ViT-B-16-quickgelu"  # open_clip model name (dpmpp-tiny: our small config)
    pretrained: str | None = "openai"  # a weights file, an open_clip tag from the local cache, or None (random);
    # for osnet_x0_25: "msmt17" (the bundled MSMT17 weights), a safetensors file, or None; for omz_0277: "omz"
    frozen_stages: int = bounded(0, low=0, high=3)  # omz_0277: its first stages' weights stay fixed in stage 2
    # 0-based blocks feeding mask + saliency
    mask_blocks: list[int] = bounded(factory=lambda: [1, 3, 9, 11], low=0, nonempty=True)
    use_mask: bool = True  # dynamic prototype mask and masked metric (off: CLIP-ReID-style baseline)
    mask_hidden: int = bounded(512, low=1)  # channels of the mask generator's convolutions
    mask_reduce: int | None = bounded(None, low=1)  # 1x1 reduction per block before concatenation (lighter generator)
    # "text": W <- normalize(T) (R); "text_centred": T's mean removed first; "random"
    prototype_init: Literal["text", "text_centred", "random"] = "text"
    use_text_stage: bool = True  # stage 1 learns per-identity prompts; off: no text prototypes, no i2t loss
    prompt_template: str = "A photo of a X X X X person."  # X = learnable per-identity tokens
    camera_embedding: bool = False  # SIE: a learned vector per camera added to the tokens
    sie_coef: float = 3.0  # SIE coefficient (CLIP-ReID's default)
    # SIE added to "all" tokens (R), or to the "cls" token only (CLIP-ReID, the spec)
    sie_tokens: Literal["all", "cls"] = "all"
    bnneck: bool = True  # CLIP-ReID's BatchNorm neck on p before the heads and at test (centres the features)
    saliency_head: bool = True  # per-patch saliency head for patch transfer
    saliency_detach: bool = True  # SPT's selection losses train the saliency head only, not the encoder or p (R)


@dataclass
class LossCfg:
    id_weight: float = bounded(0.5, low=0)  # unmasked prototype CE
    id_scale: float = bounded(30.0, above=0)  # scale s of the cosine logits
    arcface_weight: float = bounded(0.5, low=0)  # masked ArcFace
    arcface_scale: float = bounded(30.0, above=0)
    arcface_margin: float = bounded(0.3, low=0)
    i2t_weight: float = bounded(1.0, low=0)  # CE of image features against frozen text prototypes
    # i2t logits. None: raw dot products p·Tᵀ, CLIP-ReID's (no temperature: the norms of p and T set the scale).
    # A number s: s·cos(p, t_c), in neither paper (R): a fixed scale, like id_scale, for encoders whose raw
    # products are far from a usable softmax range (the tiny preset, trained from random init, uses 30).
    i2t_scale: float | None = bounded(None, above=0)
    # p in the i2t loss: "post_neck" (after the BN neck, R) or "pre_neck" (CLIP-ReID)
    i2t_feature: Literal["post_neck", "pre_neck"] = "post_neck"
    # CE smoothing of the i2t loss, and of the unmasked ID loss unless overridden below
    label_smoothing: float = bounded(0.1, low=0, high=1)
    # unmasked prototype CE; None: label_smoothing; 0: plain CE (the spec)
    id_label_smoothing: float | None = bounded(None, low=0, high=1)
    triplet_weight: float = bounded(1.0, low=0)  # batch-hard triplet on x and p
    triplet_margin: float | None = bounded(0.3, low=0)  # None: soft margin
    masked_pair_weight: float = bounded(0.0, low=0)  # (R) the test-time masked metric on the batch's pairs
    masked_pair_scale: float = bounded(30.0, above=0)
    masked_pair_margin: float = bounded(0.3, low=0)
    orth_weight: float = bounded(0.1, low=0)  # head orthogonality on the last block's CLS->patch attention
    align_weight: float = bounded(0.0, low=0)  # lambda_a * mean(1 - cos(w_c, t_c)) (R)
    saliency_weight: float = bounded(1.0, low=0)  # total weight of the saliency-selection losses
    saliency_keep: float = bounded(0.3, low=0, high=1)  # target fraction of kept patches
    saliency_ratio_weight: float = bounded(50.0, low=0)
    saliency_overlap_weight: float = bounded(0.1, low=0)
    distill_teacher: str | None = None  # a pretrained peer (dpmpp.model.peers) whose clean-crop features teach p
    # relational distillation: p's in-batch similarities follow the teacher's (R)
    distill_weight: float = bounded(0.0, low=0)
    distill_temperature: float = bounded(0.1, above=0)  # softmax temperature of those similarities
    # BCE of the saliency head against the dataset's person masks, if it has any
    saliency_person_weight: float = bounded(1.0, low=0)


@dataclass
class AugCfg:
    patch_transfer: bool = True  # saliency-guided patch transfer (SPT)
    transfer_prob: float = bounded(0.5, low=0, high=1)  # probability that an anchor is mixed
    occlusion_pairing: bool = True  # OIoU pairing with circular shifts; off: a random partner
    top_fraction: float = bounded(0.1, low=0, high=1)  # draw the partner from the top fraction of (j, shift) by OIoU
    min_oiou: float = bounded(0.7, low=0, high=1)  # accept a drawn pair above this overlap, else take the best
    # largest circular shift of the anchor, in patch columns; None: any (SPT)
    max_shift: int | None = bounded(None, low=0)
    # "partner": all of it outside its person (SPT); "anchor_person": only the anchor's person patches the
    # partner's person does not cover, so real occluders of the anchor stay (R)
    transfer_region: Literal["partner", "anchor_person"] = "partner"
    # partner identity excluded from CE logits and triplet negatives; "auto": only when the saliency head guides
    # the transfer, not the dataset's person silhouettes (see engine.train)
    class_ignoring: bool | Literal["auto"] = "auto"
    holistic_positives: bool = True  # (R) mixed anchors take only unmixed same-ID positives in the triplet
    saliency_threshold: float = bounded(0.5, low=0, high=1)  # binarisation of the saliency map
    # (R) binarise each map by keeping its highest `saliency_top` share of patches instead (None: the threshold):
    # a soft map trained to keep about 30 % (loss.saliency_keep) may never reach 0.5, and then no person is found
    saliency_top: float | None = bounded(None, above=0, high=1)
    # "auto": the dataset's person masks when it has them, else the head; "head": always the head
    saliency_source: Literal["auto", "head"] = "auto"
    nearer_persons_occlude: bool = False  # person masks: cut out nearer persons' boxes, so they get transferred
    warmup_epochs: int = bounded(1, low=0)  # no transfer while the saliency head has not learnt anything


@dataclass
class TrainCfg:
    seed: int = 0
    init_checkpoint: str | None = None  # start from this checkpoint's weights (shape-compatible tensors only)
    stage1_epochs: int = bounded(120, low=0)  # 0: no stage 1
    stage1_lr: float = bounded(3.5e-4, low=0)
    stage1_weight_decay: float = bounded(1e-4, low=0)
    stage1_batch_size: int = bounded(64, low=1)
    stage1_warmup_epochs: int = bounded(5, low=0)
    epochs: int = bounded(60, low=1)  # stage 2
    lr_encoder: float = bounded(5e-6, low=0)  # pretrained image encoder
    # mask generator, saliency head, prototypes, camera embedding (R: larger rate)
    lr_head: float = bounded(5e-4, low=0)
    weight_decay: float = bounded(1e-4, low=0)
    warmup_epochs: int = bounded(10, low=0)
    schedule: Literal["step", "cosine", "constant"] = "step"  # after the warm-up
    milestones: list[int] = bounded(factory=lambda: [30, 50], low=0)  # epochs where "step" multiplies by gamma
    gamma: float = bounded(0.1, above=0)
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    eval_every: int = bounded(10, low=0)  # epochs between evaluations (0: only at the end)
    checkpoint_every: int = bounded(1, low=1)  # epochs between resumable checkpoints
    grad_clip: float | None = bounded(5.0, low=0)  # global gradient norm; None or 0: no clipping
    # The saliency head trains on detached tokens; clipped inside the global norm, its gradients would still
    # scale every other parameter's step. Apart, the other weights train exactly as without the head (tested).
    clip_saliency_apart: bool = True


@dataclass
class EvalCfg:
    use_mask: bool = True  # masked metric at test time
    symmetric: bool = False  # m_q ⊙ m_g instead of the query mask alone
    batch_size: int = bounded(128, low=1)


@dataclass
class Config:
    data: DataCfg = field(default_factory=DataCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    loss: LossCfg = field(default_factory=LossCfg)
    aug: AugCfg = field(default_factory=AugCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    preset: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        """A validated config from `{section: {field: value}}` (and "preset"); absent fields keep their defaults."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be an object of sections; got {_short(data)}")
        config = cls()
        for section, values in data.items():
            if section == "preset":
                config.preset = values
                continue
            target = _section(config, section)
            if not isinstance(values, dict):
                raise ConfigError(f"config section {section!r} must be an object of fields; got {_short(values)}")
            for key, value in values.items():
                _set_field(target, section, key, value)
        return config.validate()

    def validate(self) -> "Config":
        """Check every field against its type hint and bounds, then the combinations; return self.

        Raises ConfigError naming the first bad field and what it takes.
        """
        for section, section_type in _section_types().items():
            target = getattr(self, section)
            if not isinstance(target, section_type):
                raise ConfigError(f"config section {section} must be a {section_type.__name__}; got {_short(target)}")
            for name, (hint, bounds) in _field_specs(section_type).items():
                check_value(f"{section}.{name}", hint, getattr(target, name), bounds)
        check_value("preset", str, self.preset)
        self._check_combinations()
        return self

    def _check_combinations(self) -> None:
        """Checks that involve more than one field."""
        data, model, loss = self.data, self.model, self.loss
        if model.backbone == "clip":
            patch = clip_patch_size(model.clip_model)
            for side in ("height", "width"):
                value = getattr(data, side)
                if patch and value % patch:
                    raise ConfigError(
                        f"data.{side} must be a multiple of {patch}, the patch size of {model.clip_model}; got {value}"
                    )
        elif model.backbone == "omz_0277" and (data.height, data.width) != (256, 128):
            raise ConfigError(
                f"data.height/width must be 256/128 for omz_0277 (its pooling is learnt per location); "
                f"got {data.height}/{data.width}"
            )
        elif model.camera_embedding:
            raise ConfigError(
                f"model.camera_embedding (SIE) needs the clip backbone's tokens; {model.backbone} has none "
                "(set model.camera_embedding=false)"
            )
        if model.frozen_stages and model.backbone != "omz_0277":
            raise ConfigError(f"model.frozen_stages is for omz_0277; {model.backbone} trains all its stages")
        if loss.distill_weight > 0 and not loss.distill_teacher:
            raise ConfigError(
                f"loss.distill_weight={loss.distill_weight} needs loss.distill_teacher (a pretrained peer's name)"
            )


def _sections() -> list[str]:
    return list(_section_types())


@functools.cache
def _section_types() -> dict[str, type]:
    hints = get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config) if f.name != "preset"}


@functools.cache
def _field_specs(section_type: type) -> dict[str, tuple[Any, Bounds | None]]:
    """Each field of a section: (type hint, bounds or None)."""
    hints = get_type_hints(section_type)
    return {f.name: (hints[f.name], f.metadata.get("bounds")) for f in dataclasses.fields(section_type)}


def _section(config: Config, section: str) -> Any:
    if section not in _section_types():
        raise ConfigError(f"unknown config section {section!r}; expected one of {_sections()}")
    return getattr(config, section)


def _set_field(target, section: str, key: str, value: Any) -> None:
    names = _field_specs(type(target))
    if key not in names:
        raise ConfigError(f"unknown config field {section}.{key}; {section} has {sorted(names)}")
    setattr(target, key, value)


# ----- checking one value against its type hint ---------------------------------------------------------------
def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType)


def choices(hint: Any) -> tuple | None:
    """The allowed values of a `Literal[...]` hint (or a union of Literals and bool); None for any other hint."""
    if get_origin(hint) is Literal:
        return get_args(hint)
    if not _is_union(hint):
        return None
    values: list = []
    for arm in get_args(hint):
        if arm is bool:
            values += [True, False]
        elif get_origin(arm) is Literal:
            values += get_args(arm)
        else:
            return None
    return tuple(values)


def _matches(hint: Any, value: Any) -> bool:
    origin = get_origin(hint)
    if hint is type(None):
        return value is None
    if origin is Literal:  # by type as well: 1 == True, but 1 is not a choice of `bool | Literal["auto"]`
        return any(type(value) is type(allowed) and value == allowed for allowed in get_args(hint))
    if _is_union(hint):
        return any(_matches(arm, value) for arm in get_args(hint))
    if origin is list:
        (item,) = get_args(hint)
        return isinstance(value, list) and all(_matches(item, entry) for entry in value)
    if hint is bool:
        return type(value) is bool
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number and (not isinstance(value, float) or math.isfinite(value))
    if hint is str:
        return isinstance(value, str)
    raise TypeError(f"config fields of type {hint} are not checked; add them to dpmpp.config._matches")


_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string", type(None): "null"}
_PLURALS = {int: "integers", float: "finite numbers", str: "strings", bool: "true or false values"}


def _describe(hint: Any) -> str:
    if get_origin(hint) is list:
        return f"a list of {_PLURALS[get_args(hint)[0]]}"
    if _is_union(hint):
        arms = sorted(get_args(hint), key=lambda arm: arm is type(None))  # "or null" last
        return " or ".join(_describe(arm) for arm in arms)
    return _NAMES[hint]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_value(name: str, hint: Any, value: Any, bounds: Bounds | None = None) -> None:
    """Raise ConfigError naming `name` and what it takes unless `value` fits the type hint and the bounds."""
    allowed = choices(hint)
    if allowed is not None:
        if not _matches(hint, value):
            raise ConfigError(f"{name} must be one of {allowed}; got {_short(value)}")
        return
    if not _matches(hint, value):
        raise ConfigError(f"{name} must be {_describe(hint)}; got {_short(value)}")
    if bounds is None or value is None:
        return
    entries = value if isinstance(value, list) else [value]
    if bounds.nonempty and not entries:
        raise ConfigError(f"{name} must not be empty")
    if not all(bounds.contains(entry) for entry in entries):
        what = f"{name} entries" if isinstance(value, list) else name
        raise ConfigError(f"{what} must be {bounds.expected()}; got {_short(value)}")


def _all_field_specs() -> dict[str, tuple[Any, Bounds | None]]:
    return {
        f"{section}.{name}": spec
        for section, section_type in _section_types().items()
        for name, spec in _field_specs(section_type).items()
    }


# Fields that take one of a few values, by dotted name, derived from their `Literal` type hints.
CHOICES: dict[str, tuple] = {
    name: allowed for name, (hint, _) in _all_field_specs().items() if (allowed := choices(hint)) is not None
}


def check_choice(name: str, value: Any) -> None:
    """Raise ConfigError naming field `name` ("model.sie_tokens") and what it takes unless `value` suits it."""
    specs = _all_field_specs()
    if name not in specs:
        raise ConfigError(f"unknown config field {name}")
    hint, bounds = specs[name]
    check_value(name, hint, value, bounds)


_VIT_NAME = re.compile(r"ViT-[A-Za-z]+-(\d+)(?:-|$)")  # open_clip's ViT names carry the patch size: ViT-B-16


@functools.lru_cache(maxsize=64)
def clip_patch_size(model_name: str) -> int | None:
    """The patch size of an open_clip ViT: from the project's own model configs, else from its name (ViT-B-16: 16);
    None where neither says."""
    own = {path.stem: path for path in (PRESET_DIR / "open_clip").glob("*.json")}
    if model_name in own:
        patch = json.loads(own[model_name].read_text()).get("vision_cfg", {}).get("patch_size")
        return patch if isinstance(patch, int) else None
    match = _VIT_NAME.match(model_name)
    return int(match.group(1)) if match else None


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> Config:
    """A preset by name (dpmpp/configs/NAME.json) or a JSON file path, validated."""
    path = PRESET_DIR / f"{name}.json"
    if not path.is_file():
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names())} or a JSON file path")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not a JSON config ({error})") from error
    try:
        config = Config.from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error
    config.preset = config.preset or path.stem
    return config


def parse_value(text: str) -> Any:
    """`--set` values are JSON where they parse (numbers, true/false/null, lists), else plain strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply `section.field=value` strings, e.g. `aug.patch_transfer=false`, `train.milestones=[10,20]`, then
    validate the whole config (so the order of the overrides does not matter)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise ConfigError(f"override {item!r} must look like section.field=value, e.g. train.epochs=10")
        _set_field(_section(config, section), section, name, parse_value(value))
    return config.validate()
