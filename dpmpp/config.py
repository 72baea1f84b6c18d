"""Configuration as dataclasses: JSON presets in dpmpp/configs, dotted `--set` overrides, saved beside weights.

Every switch the ablation grid (docs/method.md §8) varies is a named field with a one-line comment; choices that
are our reconstruction rather than published fact are marked (R).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class DataCfg:
    name: str = "pets09_occ"  # registered dataset
    root: str | None = None  # dataset folder; None = the bundled one
    height: int = 256  # input height in pixels
    width: int = 128  # input width in pixels
    num_pids: int = 16  # P identities per batch
    num_instances: int = 4  # K images per identity
    num_workers: int = 2  # data-loader workers
    flip_prob: float = 0.5  # random horizontal flip
    pad: int = 10  # padding before the random crop
    erasing_prob: float = 0.0  # random erasing (off: patch transfer supplies occlusion)


@dataclass
class ModelCfg:
    backbone: str = "clip"  # image encoder: "clip" (open_clip's tower, the paper) or "osnet_x0_25" (pretrained re-ID)
    clip_model: str = "ViT-B-16-quickgelu"  # open_clip model name (dpmpp-tiny: our small config)
    pretrained: str | None = "openai"  # a weights file, an open_clip tag from the local cache, or None (random);
    # for an OSNet backbone: "msmt17" (the bundled MSMT17 weights), a safetensors file, or None
    mask_blocks: list[int] = field(default_factory=lambda: [1, 3, 9, 11])  # 0-based blocks feeding mask + saliency
    use_mask: bool = True  # dynamic prototype mask and masked metric (off: CLIP-ReID-style baseline)
    mask_hidden: int = 512  # channels of the mask generator's convolutions
    mask_reduce: int | None = None  # 1x1 reduction per block before concatenation (lighter generator)
    prototype_init: str = "text"  # "text": W <- normalize(T) (R); "text_centred": T's mean removed first; "random"
    use_text_stage: bool = True  # stage 1 learns per-identity prompts; off: no text prototypes, no i2t loss
    prompt_template: str = "A photo of a X X X X person."  # X = learnable per-identity tokens
    camera_embedding: bool = False  # SIE: a learned vector per camera added to the tokens
    sie_coef: float = 3.0  # SIE coefficient (CLIP-ReID's default)
    sie_tokens: str = "all"  # SIE added to "all" tokens (R), or to the "cls" token only (CLIP-ReID, the spec)
    bnneck: bool = True  # CLIP-ReID's BatchNorm neck on p before the heads and at test (centres the features)
    saliency_head: bool = True  # per-patch saliency head for patch transfer
    saliency_detach: bool = True  # SPT's selection losses train the saliency head only, not the encoder or p (R)


@dataclass
class LossCfg:
    id_weight: float = 0.5  # unmasked prototype CE
    id_scale: float = 30.0  # scale s of the cosine logits
    arcface_weight: float = 0.5  # masked ArcFace
    arcface_scale: float = 30.0
    arcface_margin: float = 0.3
    i2t_weight: float = 1.0  # CE of image features against frozen text prototypes
    # i2t logits. None: raw dot products p·Tᵀ, CLIP-ReID's (no temperature: the norms of p and T set the scale).
    # A number s: s·cos(p, t_c), in neither paper (R): a fixed scale, like id_scale, for encoders whose raw
    # products are far from a usable softmax range (the tiny preset, trained from random init, uses 30).
    i2t_scale: float | None = None
    i2t_feature: str = "post_neck"  # p in the i2t loss: "post_neck" (after the BN neck, R) or "pre_neck" (CLIP-ReID)
    label_smoothing: float = 0.1  # CE smoothing of the i2t loss, and of the unmasked ID loss unless overridden below
    id_label_smoothing: float | None = None  # unmasked prototype CE; None: label_smoothing; 0: plain CE (the spec)
    triplet_weight: float = 1.0  # batch-hard triplet on x and p
    triplet_margin: float | None = 0.3  # None: soft margin
    masked_pair_weight: float = 0.0  # (R) the test-time masked metric on the batch's (anchor, other) pairs
    masked_pair_scale: float = 30.0
    masked_pair_margin: float = 0.3
    orth_weight: float = 0.1  # head orthogonality on the last block's CLS->patch attention
    align_weight: float = 0.0  # lambda_a * mean(1 - cos(w_c, t_c)) (R)
    saliency_weight: float = 1.0  # total weight of the saliency-selection losses
    saliency_keep: float = 0.3  # target fraction of kept patches
    saliency_ratio_weight: float = 50.0
    saliency_overlap_weight: float = 0.1
    distill_teacher: str | None = None  # a pretrained peer (dpmpp.model.peers) whose clean-crop features teach p
    distill_weight: float = 0.0  # relational distillation: p's in-batch similarities follow the teacher's (R)
    distill_temperature: float = 0.1  # softmax temperature of those similarities
    saliency_person_weight: float = 1.0  # BCE of the saliency head against the dataset's person masks, if it has any


@dataclass
class AugCfg:
    patch_transfer: bool = True  # saliency-guided patch transfer (SPT)
    transfer_prob: float = 0.5  # probability that an anchor is mixed
    occlusion_pairing: bool = True  # OIoU pairing with circular shifts; off: a random partner
    top_fraction: float = 0.1  # draw the partner from the top fraction of (j, shift) by OIoU
    min_oiou: float = 0.7  # accept a drawn pair above this overlap, else take the best
    max_shift: int | None = None  # largest circular shift of the anchor, in patch columns; None: any (SPT)
    transfer_region: str = "partner"  # "partner": all of it outside its person (SPT); "anchor_person": only the
    # anchor's person patches the partner's person does not cover, so real occluders of the anchor stay (R)
    class_ignoring: bool | str = "auto"  # partner identity excluded from CE logits and triplet negatives; "auto":
    # only when the saliency head guides the transfer, not the dataset's person silhouettes (see engine.train)
    holistic_positives: bool = True  # (R) mixed anchors take only unmixed same-ID positives in the triplet
    saliency_threshold: float = 0.5  # binarisation of the saliency map
    saliency_source: str = "auto"  # "auto": the dataset's person masks when it has them, else the head; "head"
    nearer_persons_occlude: bool = False  # person masks: cut out nearer persons' boxes, so they get transferred
    warmup_epochs: int = 1  # no transfer while the saliency head has not learnt anything


@dataclass
class TrainCfg:
    seed: int = 0
    init_checkpoint: str | None = None  # start from this checkpoint's weights (shape-compatible tensors only)
    stage1_epochs: int = 120
    stage1_lr: float = 3.5e-4
    stage1_weight_decay: float = 1e-4
    stage1_batch_size: int = 64
    stage1_warmup_epochs: int = 5
    epochs: int = 60  # stage 2
    lr_encoder: float = 5e-6  # pretrained image encoder
    lr_head: float = 5e-4  # mask generator, saliency head, prototypes, camera embedding (R: larger rate)
    weight_decay: float = 1e-4
    warmup_epochs: int = 10
    schedule: str = "step"  # "step" or "cosine"
    milestones: list[int] = field(default_factory=lambda: [30, 50])
    gamma: float = 0.1
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    eval_every: int = 10  # epochs between evaluations (0: only at the end)
    checkpoint_every: int = 1  # epochs between resumable checkpoints
    grad_clip: float | None = 5.0
    # The saliency head trains on detached tokens; clipped inside the global norm, its gradients would still
    # scale every other parameter's step. Apart, the other weights train exactly as without the head (tested).
    clip_saliency_apart: bool = True


@dataclass
class EvalCfg:
    use_mask: bool = True  # masked metric at test time
    symmetric: bool = False  # m_q ⊙ m_g instead of the query mask alone
    batch_size: int = 128


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
        config = cls()
        for section, values in data.items():
            if section == "preset":
                config.preset = values
                continue
            target = getattr(config, section, None)
            if target is None or not dataclasses.is_dataclass(target):
                raise ValueError(f"unknown config section {section!r}; expected one of {_sections()}")
            if not isinstance(values, dict):
                raise ValueError(f"config section {section!r} must be an object of fields; got {values!r}")
            for key, value in values.items():
                _set_field(target, section, key, value)
        return config


def _sections() -> list[str]:
    return [f.name for f in dataclasses.fields(Config) if f.name != "preset"]


# String fields that take one of a few values: checked when a preset or override sets them, and where they are used.
CHOICES: dict[str, tuple[str, ...]] = {
    "model.backbone": ("clip", "osnet_x0_25"),
    "model.sie_tokens": ("all", "cls"),
    "loss.i2t_feature": ("post_neck", "pre_neck"),
}


def check_choice(name: str, value: Any) -> None:
    """Raise ValueError naming the field and its allowed values unless `value` is one of CHOICES[name]."""
    allowed = CHOICES[name]
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}; got {value!r}")


def _set_field(target, section: str, key: str, value: Any) -> None:
    names = {f.name: f for f in dataclasses.fields(target)}
    if key not in names:
        raise ValueError(f"unknown config field {section}.{key}; {section} has {sorted(names)}")
    if f"{section}.{key}" in CHOICES:
        check_choice(f"{section}.{key}", value)
    setattr(target, key, value)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> Config:
    path = PRESET_DIR / f"{name}.json"
    if not path.is_file():
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"unknown preset {name!r}; available: {', '.join(preset_names())} or a JSON file path")
    config = Config.from_dict(json.loads(path.read_text()))
    config.preset = config.preset or path.stem
    return config


def parse_value(text: str) -> Any:
    """`--set` values are JSON where they parse (numbers, true/false/null, lists), else plain strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply `section.field=value` strings, e.g. `aug.patch_transfer=false`, `train.milestones=[10,20]`."""
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise ValueError(f"override {item!r} must look like section.field=value")
        target = getattr(config, section, None)
        if target is None or not dataclasses.is_dataclass(target):
            raise ValueError(f"unknown config section {section!r}; expected one of {_sections()}")
        _set_field(target, section, name, parse_value(value))
    return config
