"""Occluded-REID reader: `occluded_body_images/<pid>/<pid>_<k>.tif` (query), `whole_body_images/` (gallery).

There is no training set (models are trained on Market-1501). Query images get camera 0 and gallery images
camera 1, so the same-identity-same-camera filter of the protocol keeps every true match.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from dpmpp.data.datasets import absolute, find_root, match_images, register, require_dirs, sorted_records
from dpmpp.data.records import ReIDRecord, Split

logger = logging.getLogger(__name__)

PID_INDEX_RULE = re.compile(r"(\d+)_(\d+)")
QUERY_CAMID = 0
GALLERY_CAMID = 1
QUERY_DIR = "occluded_body_images"
GALLERY_DIR = "whole_body_images"


def read_pid_index_folder(name: str, folder: Path, camid: int) -> list[ReIDRecord]:
    """Every `<pid>_<k>.<ext>` image in `folder`, directly or in per-pid subfolders, with one fixed camera."""
    records = [
        ReIDRecord(absolute(path), int(match.group(1)), camid, {"filename": path.name, "index": int(match.group(2))})
        for path, match in match_images(name, folder, PID_INDEX_RULE, recursive=True)
    ]
    return sorted_records(records)


@register("occluded_reid")
def load_occluded_reid(root: Path) -> Split:
    name = "occluded_reid"
    expected = [QUERY_DIR, GALLERY_DIR]
    root = find_root(Path(root), expected, ["Occluded_REID"])
    require_dirs(name, root, expected)
    query = read_pid_index_folder(name, root / QUERY_DIR, QUERY_CAMID)
    gallery = read_pid_index_folder(name, root / GALLERY_DIR, GALLERY_CAMID)
    return Split([], query, gallery, name=name)
