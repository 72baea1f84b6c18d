"""Readers of the bundled PETS09-S2L1 benchmark built by `python -m dpmpp build-data pets09`.

`pets09_occ`: occluded queries against a holistic gallery. `pets09_holistic`: the gallery's own crops as
queries (the same-pid-same-camid rule removes the query's own track, so a query never finds itself).

`pets09_occ_val` and `pets09_holistic_val`: the same protocols on a validation split carved from the training
rows alone, for design choices; test rows are never read into them. Every other training chunk (from the second:
chunks 2, 6, 10 and 14 of 50 frames) is held out whole, so the remaining training frames are a whole test chunk
(over 60 frames) away from every validation frame, farther apart than the test guard keeps train and test.
Of all choices of four or fewer of the eight training chunks, this one gives the most occlusion events: 71
answerable queries in 19 events of 7 persons, a gallery of 436 crops of 10 persons; training keeps 353 of the
887 crops (9 persons). Three held-out chunks give at most 15 events, two at most 9.
"""

from __future__ import annotations

import csv
import logging
from bisect import bisect_left
from collections import defaultdict
from pathlib import Path

from dpmpp.data.build_pets09 import Protocol
from dpmpp.data.datasets import DatasetLayoutError, register
from dpmpp.data.records import ReIDRecord, Split

logger = logging.getLogger(__name__)

VAL_CHUNK_STRIDE = 2  # every other training chunk is held out for validation
PROTOCOL = Protocol()  # the protocol the bundled manifest was built with

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


def chunk_of(frame: int, protocol: Protocol = PROTOCOL) -> int:
    """0-based index of the chunk holding `frame` (1-based); even chunks are training chunks."""
    return (frame - 1) // protocol.chunk_frames


def validation_chunks(train: list[ReIDRecord], protocol: Protocol = PROTOCOL) -> list[int]:
    """The training chunks held out for validation: every other one, from the second."""
    return sorted({chunk_of(r.meta["frame"], protocol) for r in train})[1::VAL_CHUNK_STRIDE]


def frame_gap(frame: int, frames: list[int]) -> int | None:
    """Distance in frames from `frame` to the nearest of the sorted `frames` (None when empty)."""
    if not frames:
        return None
    at = bisect_left(frames, frame)
    return min(abs(frame - frames[i]) for i in (at - 1, at) if 0 <= i < len(frames))


def answerable(query: list[ReIDRecord], gallery: list[ReIDRecord]) -> list[ReIDRecord]:
    """The queries with a gallery crop of their person from another track (camid): the others cannot count."""
    tracks: dict[int, set[int]] = defaultdict(set)
    for record in gallery:
        tracks[record.pid].add(record.camid)
    return [q for q in query if tracks[q.pid] - {q.camid}]


def carve_validation(
    train: list[ReIDRecord], protocol: Protocol = PROTOCOL, chunks: list[int] | None = None
) -> tuple[list[ReIDRecord], list[ReIDRecord], list[ReIDRecord]]:
    """(train, query, gallery) of a validation split cut from training rows alone.

    Whole training chunks (`chunks`, default `validation_chunks`) are held out. A remaining training crop closer
    than `protocol.guard_frames` to any held-out frame is dropped, as the test split's guard does (whole chunks are
    a test chunk apart, so none is). Held-out crops at least `query_min_occlusion` hidden are queries, those under
    `holistic_max_occlusion` the gallery (training rows already keep every 2nd frame); queries without a gallery
    crop of their person from another track are dropped.
    """
    held_chunks = set(validation_chunks(train, protocol) if chunks is None else chunks)
    held = [r for r in train if chunk_of(r.meta["frame"], protocol) in held_chunks]
    held_frames = sorted({r.meta["frame"] for r in held})
    kept = []
    for record in train:
        if chunk_of(record.meta["frame"], protocol) in held_chunks:
            continue
        gap = frame_gap(record.meta["frame"], held_frames)
        if gap is None or gap >= protocol.guard_frames:
            kept.append(record)
    if len(kept) + len(held) < len(train):
        logger.info("validation: dropped %d training crops inside the guard", len(train) - len(kept) - len(held))
    query = [r for r in held if r.meta["occluded_fraction"] >= protocol.query_min_occlusion]
    gallery = [
        r
        for r in held
        if r.meta["occluded_fraction"] < protocol.holistic_max_occlusion
        and r.meta["frame"] % protocol.gallery_frame_step == 0
    ]
    return kept, answerable(query, gallery), gallery


@register("pets09_occ_val")
def load_pets09_occ_val(root: Path) -> Split:
    train, query, gallery = carve_validation(_read(root, "pets09_occ_val")["train"])
    return Split(train, query, gallery, name="pets09_occ_val", camid_is_track=True)


@register("pets09_holistic_val")
def load_pets09_holistic_val(root: Path) -> Split:
    train, _, gallery = carve_validation(_read(root, "pets09_holistic_val")["train"])
    return Split(train, gallery, gallery, name="pets09_holistic_val", camid_is_track=True)
