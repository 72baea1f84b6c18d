"""A benchmark's embeddings kept on disk per model weights, so that loading a checkpoint the app has seen before
takes seconds instead of re-embedding every gallery image.

An entry's key is the SHA-256 of the weights files, the image size, the device type, and every image's path, size,
modification time and camera. Changed weights or images make a new key; entries nobody uses age out (at most
`MAX_ENTRIES` files, the least recently used removed first). Files are .npz (no pickles), written atomically; a
damaged one is deleted and recomputed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from dpmpp.atomic import atomic_path
from dpmpp.data.records import ReIDRecord
from dpmpp.paths import PROJECT_ROOT

logger = logging.getLogger(__name__)
MAX_ENTRIES = 64  # about 2 MB each for a 2,000-image split at 256-d


def cache_folder() -> Path:
    """$DPMPP_CACHE/embeddings, or .cache/embeddings in the project."""
    return Path(os.environ.get("DPMPP_CACHE") or PROJECT_ROOT / ".cache") / "embeddings"


def file_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def entry_key(model_digest: str, records: list[ReIDRecord], with_cameras: bool) -> str:
    digest = hashlib.sha256(model_digest.encode())
    for record in records:
        stat = Path(record.path).stat()
        camera = record.camid if with_cameras else ""
        digest.update(f"{record.path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{camera}\n".encode())
    return digest.hexdigest()[:32]


def load(key: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    path = cache_folder() / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            features = data["features"]
            masks = data["masks"] if "masks" in data.files else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        logger.warning("embedding cache: dropped a damaged entry (%s)", type(error).__name__)
        path.unlink(missing_ok=True)
        return None
    os.utime(path)  # recently used
    return features, masks


def store(key: str, features: np.ndarray, masks: np.ndarray | None) -> None:
    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"features": features} if masks is None else {"features": features, "masks": masks}
    with atomic_path(folder / f"{key}.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    entries = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime_ns)
    for stale in entries[:-MAX_ENTRIES]:
        stale.unlink(missing_ok=True)
