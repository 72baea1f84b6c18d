"""Readers of the bundled PETS09-S2L1 benchmark built by `python -m dpmpp build-data pets09`.

`pets09_occ`: occluded queries against a holistic gallery. `pets09_holistic`: the gallery's own crops as
queries (the same-pid-same-camid rule removes the query's own track, so a query never finds itself).
"""

from __future__ import annotations

import csv
from pathlib import Path

from dpmpp.data.datasets import DatasetLayoutError, register
from dpmpp.data.records import ReIDRecord, Split

_REQUIRED = ("path", "pid", "camid", "role")
_META_INT = ("track", "frame")
_META_FLOAT = ("occluded_fraction", "bbox_left", "bbox_top", "bbox_width", "bbox_height")


def _read(root: Path, name: str) -> dict[str, list[ReIDRecord]]:
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        found = sorted(p.name for p in root.iterdir())[:20]
        raise DatasetLayoutError(
            f"{name}: expected {manifest} (built by `python -m dpmpp build-data pets09`); found {found}"
        )
    by_role: dict[str, list[ReIDRecord]] = {"train": [], "query": [], "gallery": []}
    with open(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetLayoutError(f"{name}: {manifest} lacks columns {missing}; has {reader.fieldnames}")
        for row in reader:
            meta = {k: v for k, v in row.items() if k not in ("path", "pid", "camid")}
            for key in _META_INT:
                if key in meta:
                    meta[key] = int(meta[key])
            for key in _META_FLOAT:
                if key in meta:
                    meta[key] = float(meta[key])
            record = ReIDRecord(str(root / row["path"]), int(row["pid"]), int(row["camid"]), meta)
            if row["role"] in by_role:
                by_role[row["role"]].append(record)
    missing_files = [r.path for records in by_role.values() for r in records if not Path(r.path).is_file()]
    if missing_files:
        raise DatasetLayoutError(
            f"{name}: {len(missing_files)} crops listed in {manifest} are missing, e.g. {missing_files[:3]}"
        )
    return by_role


@register("pets09_occ")
def load_pets09_occ(root: Path) -> Split:
    roles = _read(root, "pets09_occ")
    return Split(roles["train"], roles["query"], roles["gallery"], name="pets09_occ", camid_is_track=True)


@register("pets09_holistic")
def load_pets09_holistic(root: Path) -> Split:
    roles = _read(root, "pets09_holistic")
    return Split(roles["train"], roles["gallery"], roles["gallery"], name="pets09_holistic", camid_is_track=True)
