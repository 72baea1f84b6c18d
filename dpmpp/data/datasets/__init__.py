"""A small registry of benchmark readers: `load_split(name, root) -> Split`.

Each reader module registers itself with `@register("name")`. Readers only list files and parse names;
images are opened later by the data loader.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from dpmpp.data.records import ReIDRecord, Split

logger = logging.getLogger(__name__)

Reader = Callable[..., Split]
_READERS: dict[str, Reader] = {}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


class DatasetLayoutError(ValueError):
    """A dataset folder does not have the layout its reader expects."""


class UnknownDatasetError(KeyError):
    """No reader is registered under the requested name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def register(name: str) -> Callable[[Reader], Reader]:
    def decorator(reader: Reader) -> Reader:
        if name in _READERS:
            raise ValueError(f"dataset {name!r} is registered twice")
        _READERS[name] = reader
        return reader

    return decorator


def dataset_names() -> list[str]:
    _import_readers()
    return sorted(_READERS)


def load_split(name: str, root: str | Path, **options) -> Split:
    """Read benchmark `name` from folder `root`; options are reader-specific (e.g. `query_dir`)."""
    _import_readers()
    if name not in _READERS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; registered: {', '.join(sorted(_READERS))}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"{name}: dataset root {str(root)!r} is not a folder")
    split = _READERS[name](root, **options)
    if not split.query or not split.gallery:
        raise DatasetLayoutError(
            f"{name}: found {len(split.query)} query and {len(split.gallery)} gallery images under {root}; "
            "both must be non-empty"
        )
    logger.info("%s", split.summary())
    return split


def require_dirs(name: str, root: Path, expected: list[str]) -> None:
    """Raise a DatasetLayoutError naming what was expected and what is there."""
    missing = [d for d in expected if not (root / d).is_dir()]
    if missing:
        raise DatasetLayoutError(
            f"{name}: expected folders {expected} under {root}; missing {missing}; found {describe_folder(root)}"
        )


def require_files(name: str, root: Path, expected: list[str]) -> None:
    """Like `require_dirs`, for files (list files, manifests)."""
    missing = [f for f in expected if not (root / f).is_file()]
    if missing:
        raise DatasetLayoutError(
            f"{name}: expected files {expected} under {root}; missing {missing}; found {describe_folder(root)}"
        )


def describe_folder(root: Path) -> list[str] | str:
    """Up to 20 entry names of `root` (folders end in '/'), for error messages."""
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:20]
    return found or "nothing"


def find_root(root: Path, expected: list[str], subfolders: list[str]) -> Path:
    """`root` if it holds the `expected` folders, else the first known release subfolder that does.

    Falls back to the first existing subfolder (or `root`) so that `require_dirs` reports against it.
    """
    candidates = [root] + [root / sub for sub in subfolders if (root / sub).is_dir()]
    for candidate in candidates:
        if all((candidate / d).is_dir() for d in expected):
            return candidate
    return candidates[1] if len(candidates) > 1 else root


def list_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Plain files in `folder` (and below it when `recursive`), hidden files skipped, sorted by path."""
    entries = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in entries if p.is_file() and not p.name.startswith("."))


def match_images(
    name: str, folder: Path, rule: re.Pattern[str], recursive: bool = False
) -> list[tuple[Path, re.Match[str]]]:
    """Images in `folder` whose file name matches `rule` (anchored at the start), with their matches.

    Raises a DatasetLayoutError naming the rule and up to 5 offending names when none matches.
    """
    files = list_files(folder, recursive)
    matched = []
    offending = []
    for path in files:
        found = rule.match(path.name) if path.suffix.lower() in IMAGE_SUFFIXES else None
        if found:
            matched.append((path, found))
        else:
            offending.append(path.relative_to(folder).as_posix())
    if not matched:
        raise DatasetLayoutError(
            f"{name}: no image in {folder} matches the filename rule `{rule.pattern}` "
            f"(suffixes {', '.join(IMAGE_SUFFIXES)}); found {len(files)} files: {offending[:5] or 'nothing'}"
        )
    if offending:
        logger.warning(
            "%s: skipped %d files in %s not matching %r: %s", name, len(offending), folder, rule.pattern, offending[:5]
        )
    return matched


def require_existing(name: str, paths: list[str], source: str | Path) -> None:
    """Raise a DatasetLayoutError if any listed image path does not exist, naming some and how many."""
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise DatasetLayoutError(
            f"{name}: {len(missing)} of {len(paths)} image paths listed in {source} do not exist, e.g. {missing[:5]}"
        )


def absolute(path: Path) -> str:
    """An absolute, normalised path string; symlinks are kept, not resolved."""
    return os.path.abspath(path)


def sorted_records(records: list[ReIDRecord]) -> list[ReIDRecord]:
    return sorted(records, key=lambda r: r.path)


def _import_readers() -> None:
    # Imported lazily so that `dpmpp.data.datasets` has no import cycle with the reader modules.
    from dpmpp.data.datasets import (  # noqa: F401
        combined,
        cuhk01,
        dukemtmc,
        manifest,
        market1501,
        msmt17,
        occluded_reid,
        partial_reid,
        pets09,
    )
