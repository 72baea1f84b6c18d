"""Shared fixtures: a small real dataset cut from the bundled benchmark, and a fast tiny config."""

import csv
import logging
import os
import tempfile
from pathlib import Path

import pytest

from dpmpp.config import apply_overrides, load_preset
from dpmpp.paths import ASSETS

# the app's embedding cache (dpmpp.embedding_cache) of this test session, shared with the servers it starts
os.environ["DPMPP_CACHE"] = tempfile.mkdtemp(prefix="dpmpp-test-cache-")
logging.getLogger("root").setLevel(logging.ERROR)  # open_clip warns that tiny models have no pretrained weights

FAST = [
    "data.height=64",
    "data.width=32",
    "data.num_pids=4",
    "data.num_instances=2",
    "train.stage1_epochs=2",
    "train.stage1_batch_size=16",
    "train.epochs=2",
    "train.eval_every=0",
    "train.warmup_epochs=0",
    "eval.batch_size=32",
    "aug.warmup_epochs=0",
]


def write_subset_manifest(folder: Path, per_role: dict[str, int]) -> Path:
    """A manifest dataset of real pets09 crops: the first N rows of each role for every person."""
    source = ASSETS / "pets09_occ"
    with open(source / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    chosen, counts = [], {}
    for row in rows:
        key = (row["role"], row["pid"], row["track"])
        if counts.get(key, 0) < per_role.get(row["role"], 0):
            counts[key] = counts.get(key, 0) + 1
            chosen.append(
                {
                    "path": str(source / row["path"]),
                    "pid": row["pid"],
                    "camid": row["camid"],
                    "split": row["role"],
                    "occluded_fraction": row["occluded_fraction"],
                }
            )
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(chosen[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return folder


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    return write_subset_manifest(tmp_path_factory.mktemp("small_data"), {"train": 4, "query": 2, "gallery": 3})


@pytest.fixture
def fast_config(small_data):
    config = load_preset("tiny")
    config.data.name, config.data.root = "manifest", str(small_data)
    return apply_overrides(config, list(FAST))
