"""Market-1501 reader, and the `bounding_box_*` layout that DukeMTMC-reID and Occluded-Duke copy.

Files look like `0002_c1s1_000451_03.jpg`: person id, then camera. pid -1 marks junk boxes and is dropped;
pid 0 marks distractors and is kept (they sit in the gallery). Cameras are stored 0-based (c1 -> 0).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpmpp.data.datasets import absolute, find_root, match_images, register, require_dirs, sorted_records
from dpmpp.data.records import ReIDRecord, Split

logger = logging.getLogger(__name__)

# The usual `([-\d]+)_c(\d)`, tightened to `-?\d+` so that every match parses as an int.
PID_CAMERA_RULE = re.compile(r"(-?\d+)_c(\d)")
SUBSET_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
JUNK_PID = -1

MetaParser = Callable[[str], dict[str, Any]]


def read_bounding_box_layout(name: str, root: Path, subfolders: list[str], parse_meta: MetaParser) -> Split:
    """Read the three `bounding_box_*`-style folders of `root` (or of one of its known `subfolders`)."""
    expected = list(SUBSET_DIRS.values())
    root = find_root(root, expected, subfolders)
    require_dirs(name, root, expected)
    subsets = {subset: _read_folder(name, root / folder, parse_meta) for subset, folder in SUBSET_DIRS.items()}
    return Split(subsets["train"], subsets["query"], subsets["gallery"], name=name)


def _read_folder(name: str, folder: Path, parse_meta: MetaParser) -> list[ReIDRecord]:
    records = []
    junk = 0
    for path, match in match_images(name, folder, PID_CAMERA_RULE):
        pid, camera = int(match.group(1)), int(match.group(2))
        if pid == JUNK_PID:
            junk += 1
            continue
        meta = {"filename": path.name, **parse_meta(path.name)}
        records.append(ReIDRecord(absolute(path), pid, camera - 1, meta))
    if junk:
        logger.debug("%s: dropped %d junk images (pid %d) in %s", name, junk, JUNK_PID, folder)
    return sorted_records(records)


_SEQUENCE_FRAME = re.compile(r"-?\d+_c\d+s(\d+)_(\d+)")


def _market_meta(filename: str) -> dict[str, Any]:
    match = _SEQUENCE_FRAME.match(filename)
    return {"sequence": int(match.group(1)), "frame": int(match.group(2))} if match else {}


@register("market1501")
def load_market1501(root: Path) -> Split:
    return read_bounding_box_layout("market1501", Path(root), ["Market-1501-v15.09.15"], _market_meta)
