"""Your own data as a CSV: columns `path,pid,camid,split` (split in train/query/gallery), extra columns -> meta.

Relative paths are resolved against the CSV's folder. Every problem is reported with the row it is on.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from dpmpp.data.datasets import DatasetLayoutError, absolute, register, require_existing, require_files, sorted_records
from dpmpp.data.records import ReIDRecord, Split

logger = logging.getLogger(__name__)

NAME = "manifest"
COLUMNS = ("path", "pid", "camid", "split")
SPLITS = ("train", "query", "gallery")


@register(NAME)
def load_manifest(root: Path, csv: str = "manifest.csv") -> Split:
    """Read `root/<csv>`; `csv` may also be a path below `root` or an absolute path."""
    root = Path(root)
    require_files(NAME, root, [csv])
    csv_path = root / csv
    subsets: dict[str, list[ReIDRecord]] = {split: [] for split in SPLITS}
    for record, split in _read_rows(csv_path):
        subsets[split].append(record)
    require_existing(NAME, [r.path for records in subsets.values() for r in records], csv_path)
    return Split(*(sorted_records(subsets[split]) for split in SPLITS), name=NAME)


def _read_rows(csv_path: Path) -> list[tuple[ReIDRecord, str]]:
    rows = []
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        found = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in COLUMNS if c not in found]
        if missing:
            raise DatasetLayoutError(
                f"{NAME}: {csv_path} needs columns {list(COLUMNS)}; missing {missing}; found {found or 'no header'}"
            )
        reader.fieldnames = found
        for row_number, row in enumerate(reader, start=1):
            where = f"{NAME}: {csv_path} row {row_number} (line {reader.line_num})"
            rows.append(_parse_row(row, where, csv_path.parent))
    return rows


def _parse_row(row: dict[str | None, str | None], where: str, csv_folder: Path) -> tuple[ReIDRecord, str]:
    values = {key: (value or "").strip() for key, value in row.items() if key is not None}
    split = values["split"]
    if split not in SPLITS:
        raise DatasetLayoutError(f"{where}: split must be one of {list(SPLITS)}, got {split!r}")
    try:
        pid, camid = int(values["pid"]), int(values["camid"])
    except ValueError:
        raise DatasetLayoutError(
            f"{where}: pid and camid must be integers, got pid={values['pid']!r} camid={values['camid']!r}"
        ) from None
    if not values["path"]:
        raise DatasetLayoutError(f"{where}: empty path")
    path = Path(values["path"]).expanduser()
    meta = {key: value for key, value in values.items() if key not in COLUMNS}
    return ReIDRecord(absolute(csv_folder / path), pid, camid, meta), split
