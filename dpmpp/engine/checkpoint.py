"""Checkpoints are folders: config.json (full config + meta), model.safetensors, text_prototypes.safetensors,
metrics.json; plus train_state.pt for --resume (tensors and numbers only, loaded with weights_only=True).
Every file is written atomically, so a crash leaves the previous file in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dpmpp.atomic import atomic_path, write_json
from dpmpp.config import Config, ModelCfg

logger = logging.getLogger(__name__)
CONFIG, WEIGHTS, TEXT, METRICS, TRAIN_STATE = (
    "config.json",
    "model.safetensors",
    "text_prototypes.safetensors",
    "metrics.json",
    "train_state.pt",
)


class CheckpointError(ValueError):
    """A checkpoint folder is missing, corrupt, or does not match its config."""


class OutOfBounds(ValueError):
    """A checkpoint declares more than this project ever builds (identities, image size, tensor bytes, ...)."""


def save_model(folder: str | Path, model, config: Config, meta: dict, metrics: dict | None = None) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != "text_prototypes"}
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "dpmpp"})
    if getattr(model, "text_prototypes", None) is not None:
        with atomic_path(folder / TEXT) as tmp:
            save_file({"text_prototypes": model.text_prototypes.detach().cpu().contiguous()}, str(tmp))
    write_json(folder / CONFIG, {**config.to_dict(), "meta": meta})
    if metrics is not None:
        write_json(folder / METRICS, metrics)


# What a checkpoint may declare: checked on config.json and on the safetensors headers before any model is built.
BACKBONES = ("clip", "osnet_x0_25", "omz_0277")
EXTRA_CLIP_MODELS = ("ViT-B-16", "ViT-B-16-quickgelu")  # the preset's model under its other open_clip name
MAX_CLASSES = 20000  # identities (prototypes)
MAX_CAMERAS = 1000
IMAGE_SIDES = (16, 512)  # each side of meta.image_size, in pixels
MAX_CHANNELS = 4096  # mask_hidden, mask_reduce
MAX_BLOCKS = 48  # entries (and block indices) of mask_blocks
MAX_CONFIG_BYTES = 1 << 20
MAX_HEADER_BYTES = 1 << 22  # a safetensors JSON header; the bundled model's is 15 kB
MAX_TENSORS = 4096
MAX_WEIGHT_BYTES = 1 << 30  # all tensors of one file together
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip


def allowed_clip_models() -> list[str]:
    """open_clip model names a checkpoint may name: those of the presets and of the project's own configs."""
    from dpmpp.config import PRESET_DIR, load_preset, preset_names

    names = set(EXTRA_CLIP_MODELS) | {p.stem for p in (PRESET_DIR / "open_clip").glob("*.json")}
    for preset in preset_names():
        try:
            names.add(load_preset(preset).model.clip_model)
        except (ValueError, OSError, json.JSONDecodeError) as error:
            logger.warning("preset %s unreadable: %s", preset, error)
    return sorted(names)


def _whole(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def validate_settings(model: ModelCfg, meta: dict) -> None:
    """Refuse model settings and meta values outside what this project builds (ValueError saying what is expected).

    Nothing is built here: the model section of a checkpoint's config and its meta are only compared with bounds.
    """
    backbone = getattr(model, "backbone", "clip")
    if backbone not in BACKBONES:
        raise OutOfBounds(f"model.backbone must be one of {BACKBONES}; got {str(backbone)[:40]!r}")
    clip_model = model.clip_model
    if clip_model not in (allowed := allowed_clip_models()):
        raise OutOfBounds(f"model.clip_model must be one of {allowed}; got {str(clip_model)[:40]!r}")
    for key in ("mask_hidden", "mask_reduce"):
        value = getattr(model, key)
        if value is not None and not _whole(value, 1, MAX_CHANNELS):
            raise OutOfBounds(f"model.{key} must be a whole number from 1 to {MAX_CHANNELS}; got {str(value)[:40]}")
    blocks = model.mask_blocks
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS or not all(_whole(b, 0, MAX_BLOCKS) for b in blocks):
        raise OutOfBounds(f"model.mask_blocks must be a list of at most {MAX_BLOCKS} block indices below {MAX_BLOCKS}")
    if not _whole(meta.get("num_classes"), 0, MAX_CLASSES):
        raise OutOfBounds(
            f"meta.num_classes must be a whole number from 0 to {MAX_CLASSES}; got {str(meta.get('num_classes'))[:40]}"
        )
    if not _whole(meta.get("num_cameras", 0), 0, MAX_CAMERAS):
        raise OutOfBounds(f"meta.num_cameras must be a whole number from 0 to {MAX_CAMERAS}")
    size = meta.get("image_size")
    low, high = IMAGE_SIDES
    if not (isinstance(size, list) and len(size) == 2 and all(_whole(side, low, high) for side in size)):
        raise OutOfBounds(
            f"meta.image_size must be [height, width], each side {low} to {high} pixels; got {size!r:.60}"
        )
    pids = meta.get("pids", [])
    if not isinstance(pids, list) or len(pids) > MAX_CLASSES:
        raise OutOfBounds(f"meta.pids must be a list of at most {MAX_CLASSES} identities")


def read_header(path: str | Path) -> dict[str, dict]:
    """The tensors a safetensors file declares ({name: {dtype, shape, data_offsets}}), from its header alone.

    Refuses (OutOfBounds) a header over the size limit, more than MAX_TENSORS tensors, more than MAX_WEIGHT_BYTES of
    tensor data; (ValueError) unknown dtypes, offsets that do not match the shapes, or a file shorter than its header
    declares.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError("not a safetensors file (shorter than its 8-byte header length)")
        length = int.from_bytes(prefix, "little")
        if length > size - 8:
            raise ValueError("not a safetensors file (its header length exceeds the file)")
        if length > MAX_HEADER_BYTES:
            raise OutOfBounds(f"a header of {length} bytes; at most {MAX_HEADER_BYTES} expected")
        header = json.loads(handle.read(length))
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file (its header is not a JSON object)")
    header.pop("__metadata__", None)
    if len(header) > MAX_TENSORS:
        raise OutOfBounds(f"{len(header)} tensors declared; at most {MAX_TENSORS} expected")
    total = 0
    for name, entry in header.items():
        entry = entry if isinstance(entry, dict) else {}
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if (
            entry.get("dtype") not in DTYPE_BYTES
            or not isinstance(shape, list)
            or not all(_whole(d, 0, MAX_WEIGHT_BYTES) for d in shape)
            or not (isinstance(offsets, list) and len(offsets) == 2 and all(_whole(o, 0, size) for o in offsets))
        ):
            raise ValueError(f"tensor {name[:60]!r}: malformed header entry")
        count = 1
        for dim in shape:
            count = min(count * dim, MAX_WEIGHT_BYTES + 1)
        nbytes = count * DTYPE_BYTES[entry["dtype"]]
        total += nbytes
        if total > MAX_WEIGHT_BYTES:
            raise OutOfBounds(f"the tensors declare more than {MAX_WEIGHT_BYTES >> 20} MB; this is not a dpmpp model")
        if offsets[1] - offsets[0] != nbytes or 8 + length + offsets[1] > size:
            raise ValueError(f"tensor {name[:60]!r}: offsets do not match its shape, or the file is truncated")
    return header


def validate_checkpoint(folder: str | Path) -> tuple[Config, dict]:
    """Check a checkpoint folder before anything is built from it; returns its config and meta.

    CheckpointError (naming the folder by its name only, never its full path) for: a folder that is not a
    checkpoint, whether it does not exist, cannot be read or lacks a file (one message for all three); a config.json
    over MAX_CONFIG_BYTES, not JSON or not a dpmpp config; settings out of bounds (`validate_settings`); weight
    headers out of bounds or malformed (`read_header`); prototypes whose count is not meta.num_classes.
    """
    folder = Path(folder)
    label = folder.name or str(folder)[:60]
    try:
        present = folder.is_dir() and all((folder / name).is_file() for name in (CONFIG, WEIGHTS))
        too_big = present and (folder / CONFIG).stat().st_size > MAX_CONFIG_BYTES
    except OSError:
        present = too_big = False
    if not present:
        raise CheckpointError(f"{label}: not a checkpoint folder ({CONFIG} or {WEIGHTS} missing)")
    if too_big:
        raise CheckpointError(f"{label}/{CONFIG}: over {MAX_CONFIG_BYTES >> 10} kB; not a dpmpp config")
    try:
        data = json.loads((folder / CONFIG).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("meta"), dict):
            raise ValueError("expected a JSON object with a 'meta' object beside the config sections")
        config = Config.from_dict({key: value for key, value in data.items() if key != "meta"})
    except (KeyError, ValueError, TypeError, OSError, RecursionError) as error:
        raise CheckpointError(f"{label}/{CONFIG}: not a dpmpp config ({error})") from error
    try:
        validate_settings(config.model, data["meta"])
    except ValueError as error:
        raise CheckpointError(f"{label}/{CONFIG}: {error}") from error
    classes = data["meta"]["num_classes"]
    for file_name, key in ((WEIGHTS, "prototypes"), (TEXT, "text_prototypes")):
        if file_name == TEXT and not (folder / TEXT).is_file():
            continue
        try:
            header = read_header(folder / file_name)
        except OutOfBounds as error:
            raise CheckpointError(f"{label}/{file_name}: out of bounds ({error})") from error
        except (ValueError, OSError, RecursionError) as error:
            raise CheckpointError(f"{label}/{file_name}: weights are unreadable or truncated ({error})") from error
        shape = header.get(key, {}).get("shape")
        if shape is not None and (len(shape) != 2 or shape[0] != classes):
            raise CheckpointError(
                f"{label}: weights do not match config.json — {file_name} holds {key} of shape {shape}, expected "
                f"[{classes}, dim] for meta.num_classes = {classes} (was config.json edited, or copied from another "
                "model?)"
            )
    return config, data["meta"]


def read_config(folder: str | Path) -> tuple[Config, dict]:
    """The config and meta of a checkpoint folder, validated (`validate_checkpoint`) before anything is built."""
    return validate_checkpoint(folder)


def load_weights(folder: str | Path, model) -> None:
    """Load model.safetensors (+ text prototypes) into `model`, refusing any mismatch with a clear message."""
    folder = Path(folder)
    try:
        state = load_file(str(folder / WEIGHTS))
        if (folder / TEXT).is_file():
            state.update(load_file(str(folder / TEXT)))
    except (SafetensorError, OSError, RuntimeError) as error:
        raise CheckpointError(f"{folder.name}: weights are unreadable or truncated ({error})") from error
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state) - {"text_prototypes"})
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        details = [f"{k}: file {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}" for k in wrong[:5]]
        raise CheckpointError(
            f"{folder.name}: weights do not match config.json — missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatches {details} (was config.json edited, or copied from another model?)"
        )
    model.load_state_dict(state, strict=False)


def bundle(source: str | Path, target: str | Path, half: bool = True) -> int:
    """Copy a finished checkpoint for shipping: its config, metrics and weights, not its resume state; with
    `half`, float32 tensors are stored as float16 (loading widens them back). Returns the bytes written.

    The target is written file by file, atomically; a source that is not a valid checkpoint is refused first.
    """
    source, target = Path(source), Path(target)
    read_config(source)
    if target.exists() and any(target.iterdir()):
        raise CheckpointError(f"{target.name}: already holds files; bundle into a new folder")
    metrics = json.loads((source / METRICS).read_text()) if (source / METRICS).is_file() else {}
    if (source / TRAIN_STATE).is_file() and metrics.get("stage") != "done":
        raise CheckpointError(f"{source.name}: its training has not finished (train_state.pt says so); resume it first")
    target.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS, TEXT):
        if not (source / name).is_file():
            continue
        state = load_file(str(source / name))
        if half:
            state = {k: v.half() if v.dtype == torch.float32 else v for k, v in state.items()}
        with atomic_path(target / name) as tmp:
            save_file(state, str(tmp), metadata={"format": "dpmpp"})
    write_json(target / CONFIG, json.loads((source / CONFIG).read_text()))
    if metrics:
        write_json(target / METRICS, metrics)
    return sum(f.stat().st_size for f in target.iterdir() if f.is_file())


def load_compatible_weights(folder: str | Path, model) -> list[str]:
    """Start from another checkpoint: copy every tensor whose name and shape match; return the names skipped.

    Typical skips are the prototypes and camera embeddings of a model trained on other identities or cameras.
    """
    folder = Path(folder)
    read_config(folder)  # a clear error when the folder is not a checkpoint
    try:
        state = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError, RuntimeError) as error:
        raise CheckpointError(f"{folder.name}: weights are unreadable or truncated ({error})") from error
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise CheckpointError(f"{folder.name}: no tensor matches this model's architecture (another preset?)")
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))


def save_train_state(folder: str | Path, state: dict) -> None:
    with atomic_path(Path(folder) / TRAIN_STATE) as tmp:
        torch.save(state, tmp)


def load_train_state(folder: str | Path) -> dict | None:
    path = Path(folder) / TRAIN_STATE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure is a corrupt state file
        raise CheckpointError(
            f"{path.parent.name}/{TRAIN_STATE}: unreadable training state ({error}); delete it to start over"
        ) from error


def weights_hash(folder: str | Path) -> str:
    """Short SHA-256 of model.safetensors: identifies exactly which weights produced a result."""
    digest = hashlib.sha256()
    with open(Path(folder) / WEIGHTS, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
