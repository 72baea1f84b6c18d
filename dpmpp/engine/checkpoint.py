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
from dpmpp.config import Config

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


def read_config(folder: str | Path) -> tuple[Config, dict]:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder (expected {CONFIG} and {WEIGHTS} inside)")
    missing = [name for name in (CONFIG, WEIGHTS) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder}: missing {missing}; a checkpoint folder holds {CONFIG}, {WEIGHTS}, {METRICS}")
    try:
        data = json.loads((folder / CONFIG).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("meta"), dict):
            raise ValueError("expected a JSON object with a 'meta' object beside the config sections")
        meta = data.pop("meta")
        return Config.from_dict(data), meta
    except (json.JSONDecodeError, KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"{folder / CONFIG}: not a dpmpp config ({error})") from error


def load_weights(folder: str | Path, model) -> None:
    """Load model.safetensors (+ text prototypes) into `model`, refusing any mismatch with a clear message."""
    folder = Path(folder)
    try:
        state = load_file(str(folder / WEIGHTS))
        if (folder / TEXT).is_file():
            state.update(load_file(str(folder / TEXT)))
    except (SafetensorError, OSError, RuntimeError) as error:
        raise CheckpointError(f"{folder}: weights are unreadable or truncated ({error})") from error
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state) - {"text_prototypes"})
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        details = [f"{k}: file {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}" for k in wrong[:5]]
        raise CheckpointError(
            f"{folder}: weights do not match config.json — missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatches {details} (was config.json edited, or copied from another model?)"
        )
    model.load_state_dict(state, strict=False)


def load_compatible_weights(folder: str | Path, model) -> list[str]:
    """Start from another checkpoint: copy every tensor whose name and shape match; return the names skipped.

    Typical skips are the prototypes and camera embeddings of a model trained on other identities or cameras.
    """
    folder = Path(folder)
    read_config(folder)  # a clear error when the folder is not a checkpoint
    try:
        state = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError, RuntimeError) as error:
        raise CheckpointError(f"{folder}: weights are unreadable or truncated ({error})") from error
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise CheckpointError(f"{folder}: no tensor matches this model's architecture (another preset?)")
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
        raise CheckpointError(f"{path}: unreadable training state ({error}); delete it to start over") from error


def weights_hash(folder: str | Path) -> str:
    """Short SHA-256 of model.safetensors: identifies exactly which weights produced a result."""
    digest = hashlib.sha256()
    with open(Path(folder) / WEIGHTS, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
