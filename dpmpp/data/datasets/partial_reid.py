"""Partial-REID reader: `<query_dir>/` (query, camera 0) against `whole_body_images/` (gallery, camera 1).

Files are `<pid>_<k>.jpg`, directly in the folder or in per-pid subfolders. There is no training set.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dpmpp.data.datasets import find_root, register, require_dirs
from dpmpp.data.datasets.occluded_reid import GALLERY_CAMID, GALLERY_DIR, QUERY_CAMID, read_pid_index_folder
from dpmpp.data.records import Split

logger = logging.getLogger(__name__)

NAME = "partial_reid"
QUERY_DIRS = ("partial_body_images", "occluded_body_images")


@register(NAME)
def load_partial_reid(root: Path, query_dir: str = "partial_body_images") -> Split:
    """`query_dir` picks which probe folder is the query: one of `QUERY_DIRS`."""
    if query_dir not in QUERY_DIRS:
        raise ValueError(f"{NAME}: query_dir must be one of {list(QUERY_DIRS)}, got {query_dir!r}")
    expected = [query_dir, GALLERY_DIR]
    root = find_root(Path(root), expected, ["Partial_REID", "Partial-REID"])
    require_dirs(NAME, root, expected)
    query = read_pid_index_folder(NAME, root / query_dir, QUERY_CAMID)
    gallery = read_pid_index_folder(NAME, root / GALLERY_DIR, GALLERY_CAMID)
    return Split([], query, gallery, name=NAME)
