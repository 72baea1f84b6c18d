"""CUHK01 (CUHK Campus): 971 identities, two disjoint camera views, two images per identity per view.

File names are `NNNNMMM.<ext>`: identity NNNN (0001..0971), image MMM (001..004); images 001-002 come from
camera A, 003-004 from camera B. The protocol is the literature's: 485 training and 486 test identities, drawn
by a seeded random split (`split` 0..9; papers report the mean of 10), camera A queries against a camera B
gallery, every image a query (multi-shot gallery). Every design choice is made on the validation protocol
(`cuhk01_val`, `cuhk01_occ_val`): 100 of the 485 training identities become queries and gallery, the other 385
train. `cuhk01_occ` replaces each camera-A query by its synthetic occluded copy (built by
`python -m dpmpp build-data cuhk01`), so clean and occluded rows share identities, splits and gallery.

The folder is either the original release (`campus/*.png`) or the bundled one (`images/*.jpg`, `occluded/`).
"""

from __future__ import annotations

import csv
import re
from functools import partial
from pathlib import Path

import numpy as np

from dpmpp.data.datasets import DatasetLayoutError, absolute, describe_folder, match_images, register
from dpmpp.data.records import ReIDRecord, Split

NUM_IDS = 971
NUM_TRAIN_IDS = 485  # the other 486 are the test identities
NUM_VAL_IDS = 100  # held out of the training identities for every design choice
NUM_SPLITS = 10  # the literature's random trials
IMAGE_DIRS = ("images", "campus")  # bundled, original release
OCCLUDED_DIR = "occluded"
OCCLUSION_INDEX = "occlusions.csv"
_NAME = re.compile(r"(\d{4})(\d{3})\.")


def split_ids(split: int = 0) -> tuple[list[int], list[int], list[int]]:
    """(train, val, test) identities of random split `split`: `numpy.random.default_rng(split).permutation`.

    The first 485 permuted identities train, the remaining 486 test; the first 100 training ones are validation.
    """
    if not isinstance(split, int) or not 0 <= split < 1000:
        raise ValueError(f"cuhk01: split must be an integer in 0..999 (the literature reports 0..9); got {split!r}")
    order = (np.random.default_rng(split).permutation(NUM_IDS) + 1).tolist()
    train, test = order[:NUM_TRAIN_IDS], order[NUM_TRAIN_IDS:]
    return sorted(train[NUM_VAL_IDS:]), sorted(train[:NUM_VAL_IDS]), sorted(test)


def image_folder(root: Path) -> Path:
    """The folder of CUHK01 images under `root` (`images/` or `campus/`), or a DatasetLayoutError."""
    for name in IMAGE_DIRS:
        if (root / name).is_dir():
            return root / name
    raise DatasetLayoutError(
        f"cuhk01: expected a folder {' or '.join(IMAGE_DIRS)}/ of NNNNMMM.png|jpg images under {root}; "
        f"found {describe_folder(root)}"
    )


def read_records(root: Path) -> dict[int, list[ReIDRecord]]:
    """Every CUHK01 image under `root`, by identity: camid 0 for images 001-002 (camera A), 1 for 003-004."""
    folder = image_folder(root)
    by_pid: dict[int, list[ReIDRecord]] = {}
    for path, found in match_images("cuhk01", folder, _NAME):
        pid, image = int(found.group(1)), int(found.group(2))
        if not 1 <= pid <= NUM_IDS or not 1 <= image <= 4:
            raise DatasetLayoutError(f"cuhk01: {path.name} is outside identities 0001..0971 or images 001..004")
        record = ReIDRecord(absolute(path), pid, 0 if image <= 2 else 1, {"image": image})
        by_pid.setdefault(pid, []).append(record)
    if len(by_pid) != NUM_IDS or any(len(records) != 4 for records in by_pid.values()):
        short = sorted(pid for pid in range(1, NUM_IDS + 1) if len(by_pid.get(pid, [])) != 4)
        raise DatasetLayoutError(
            f"cuhk01: expected 4 images for each of {NUM_IDS} identities in {folder}; "
            f"{len(short)} identities differ, e.g. {short[:5]}"
        )
    return by_pid


def read_occlusions(root: Path) -> dict[str, dict]:
    """The occluded camera-A copies: image name -> {"path", "occluder", "occluded_fraction", ...}."""
    index = root / OCCLUSION_INDEX
    if not index.is_file() or not (root / OCCLUDED_DIR).is_dir():
        raise DatasetLayoutError(
            f"cuhk01_occ: expected {OCCLUSION_INDEX} and {OCCLUDED_DIR}/ under {root} "
            f"(built by `python -m dpmpp build-data cuhk01`); found {describe_folder(root)}"
        )
    with open(index, newline="") as handle:
        rows = {row["image"]: row for row in csv.DictReader(handle)}
    occlusions = {}
    for name, row in rows.items():
        path = root / OCCLUDED_DIR / row["path"]
        if not path.is_file():
            raise DatasetLayoutError(f"cuhk01_occ: {path} is listed in {index} but missing")
        occlusions[name] = {
            "path": absolute(path),
            "occluder": row["occluder"],
            "occluder_kind": row["occluder_kind"],
            "occluded_fraction": float(row["occluded_fraction"]),
        }
    return occlusions


def _build(root: Path, split: int, validation: bool, occluded: bool, name: str) -> Split:
    by_pid = read_records(root)
    train_ids, val_ids, test_ids = split_ids(split)
    train_ids, eval_ids = (train_ids, val_ids) if validation else (train_ids + val_ids, test_ids)
    train = [r for pid in sorted(train_ids) for r in by_pid[pid]]
    query = [r for pid in eval_ids for r in by_pid[pid] if r.camid == 0]
    gallery = [r for pid in eval_ids for r in by_pid[pid] if r.camid == 1]
    if occluded:
        occlusions = read_occlusions(root)
        missing = [Path(r.path).stem for r in query if Path(r.path).stem not in occlusions]
        if missing:
            raise DatasetLayoutError(f"{name}: {len(missing)} queries have no occluded copy, e.g. {missing[:5]}")
        query = [_occluded(r, occlusions[Path(r.path).stem]) for r in query]
    return Split(train, query, gallery, name=f"{name} (split {split})")


def _occluded(record: ReIDRecord, occlusion: dict) -> ReIDRecord:
    meta = {**record.meta, **{k: v for k, v in occlusion.items() if k != "path"}, "clean_path": record.path}
    return ReIDRecord(occlusion["path"], record.pid, record.camid, meta)


def build_split(root: Path, split: int = 0, validation: bool = False, occluded: bool = False) -> Split:
    """The split of one of the four protocols: test or validation identities, clean or occluded queries."""
    name = "cuhk01" + ("_occ" if occluded else "") + ("_val" if validation else "")
    return _build(root, split, validation, occluded, name)


for _held_out in (False, True):  # module-level names: none may shadow a function above
    for _with_occluders in (False, True):
        register("cuhk01" + ("_occ" if _with_occluders else "") + ("_val" if _held_out else ""))(
            partial(build_split, validation=_held_out, occluded=_with_occluders)
        )
