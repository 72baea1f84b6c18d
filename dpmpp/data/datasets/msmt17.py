"""MSMT17 reader (V1 `train/`+`test/` or V2 `mask_train_v2/`+`mask_test_v2/`, plus the four list files).

Each list line is `relative/path.jpg pid`; the camera is the third `_` field of the file name
(`0000_000_01_0303morning_0015_0.jpg` -> camera 1, stored 0-based). Train is the train and val lists together.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dpmpp.data.datasets import (
    DatasetLayoutError,
    absolute,
    describe_folder,
    find_root,
    register,
    require_existing,
    require_files,
    sorted_records,
)
from dpmpp.data.records import ReIDRecord, Split

logger = logging.getLogger(__name__)

NAME = "msmt17"
SUBFOLDERS = ["MSMT17_V1", "MSMT17_V2"]
LAYOUTS = (("train", "test"), ("mask_train_v2", "mask_test_v2"))
LINE_RULE = "'<relative/path.jpg> <pid>', camera = third '_' field of the file name (1-based)"
# subset -> (list files, which image folder of the layout they are relative to)
LISTS = {
    "train": (["list_train.txt", "list_val.txt"], 0),
    "query": (["list_query.txt"], 1),
    "gallery": (["list_gallery.txt"], 1),
}


@register(NAME)
def load_msmt17(root: Path) -> Split:
    root, image_dirs = _find_layout(Path(root))
    require_files(NAME, root, [f for files, _ in LISTS.values() for f in files])
    subsets = {}
    for subset, (list_files, dir_index) in LISTS.items():
        records = []
        for list_file in list_files:
            records += _read_list(root / list_file, root / image_dirs[dir_index])
        require_existing(NAME, [r.path for r in records], f"{root}/{' + '.join(list_files)}")
        subsets[subset] = sorted_records(records)
    return Split(subsets["train"], subsets["query"], subsets["gallery"], name=NAME)


def _find_layout(root: Path) -> tuple[Path, tuple[str, str]]:
    for image_dirs in LAYOUTS:
        candidate = find_root(root, list(image_dirs), SUBFOLDERS)
        if all((candidate / d).is_dir() for d in image_dirs):
            return candidate, image_dirs
    candidate = find_root(root, list(LAYOUTS[0]), SUBFOLDERS)
    raise DatasetLayoutError(
        f"{NAME}: expected folders {list(LAYOUTS[0])} (V1) or {list(LAYOUTS[1])} (V2) under {candidate}; "
        f"found {describe_folder(candidate)}"
    )


def _read_list(list_path: Path, image_dir: Path) -> list[ReIDRecord]:
    records = []
    offending = []
    for line_number, line in enumerate(list_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        record = _parse_line(line, image_dir, list_path.stem.removeprefix("list_"))
        if record is None:
            offending.append(f"line {line_number}: {line.strip()!r}")
        else:
            records.append(record)
    if offending:
        raise DatasetLayoutError(
            f"{NAME}: {len(offending)} lines of {list_path} do not follow {LINE_RULE}, e.g. {offending[:5]}"
        )
    if not records:
        raise DatasetLayoutError(f"{NAME}: {list_path} lists no images ({LINE_RULE})")
    return records


def _parse_line(line: str, image_dir: Path, list_name: str) -> ReIDRecord | None:
    fields = line.split()
    if len(fields) != 2:
        return None
    relative, pid_text = fields
    filename = Path(relative).name
    name_fields = filename.split("_")
    try:
        pid, camera = int(pid_text), int(name_fields[2])
    except (IndexError, ValueError):
        return None
    return ReIDRecord(absolute(image_dir / relative), pid, camera - 1, {"filename": filename, "list": list_name})
