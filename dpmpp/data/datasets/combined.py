"""`cuhk01_pets09`: DPM++'s default training set, CUHK01's training identities plus the PETS09 training frames.

The root holds both bundled benchmarks (`cuhk01/`, `pets09_occ/`). PETS09 identities are renumbered after
CUHK01's (pid + PETS09_PID_OFFSET) and keep their track camera ids, offset likewise. Queries and gallery are those
of cuhk01_occ (or, for `cuhk01_pets09_val`, cuhk01_occ_val), which training evaluates on; every other benchmark
is evaluated on its own after training.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dpmpp.data.datasets import register, require_dirs
from dpmpp.data.datasets.cuhk01 import build_split
from dpmpp.data.datasets.pets09 import load_pets09_occ
from dpmpp.data.records import ReIDRecord, Split

PETS09_PID_OFFSET = 10_000  # CUHK01 ids are 1..971
PETS09_CAMID_OFFSET = 100  # CUHK01 cameras are 0 and 1


def _combined(root: Path, split: int, validation: bool, name: str) -> Split:
    require_dirs(name, root, ["cuhk01", "pets09_occ"])
    cuhk = build_split(root / "cuhk01", split, validation=validation, occluded=True)
    pets = load_pets09_occ(root / "pets09_occ")
    renumbered = [
        ReIDRecord(r.path, r.pid + PETS09_PID_OFFSET, r.camid + PETS09_CAMID_OFFSET, {**r.meta, "source": "pets09"})
        for r in pets.train
    ]
    return replace(cuhk, train=cuhk.train + renumbered, name=f"{name} (split {split})")


@register("cuhk01_pets09")
def load_cuhk01_pets09(root: Path, split: int = 0) -> Split:
    return _combined(root, split, validation=False, name="cuhk01_pets09")


@register("cuhk01_pets09_val")
def load_cuhk01_pets09_val(root: Path, split: int = 0) -> Split:
    return _combined(root, split, validation=True, name="cuhk01_pets09_val")
