"""The pets09_occ validation split carved from training rows, and the query-to-training proximity report."""

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dpmpp.bench.events import occlusion_events
from dpmpp.bench.proximity import (
    ALL,
    bin_labels,
    distance_bin,
    memory_gain,
    memory_gains,
    query_proximity,
    subsets,
    summarise,
)
from dpmpp.cli import build_parser
from dpmpp.data.build_pets09 import Protocol
from dpmpp.data.datasets import load_split
from dpmpp.data.datasets.pets09 import carve_validation, chunk_of, validation_chunks
from dpmpp.data.records import ReIDRecord
from dpmpp.paths import ASSETS, default_root

BENCH = ASSETS / "pets09_occ"
PROTOCOL = Protocol()


@pytest.fixture(scope="module")
def occ_split():
    return load_split("pets09_occ", BENCH)


@pytest.fixture(scope="module")
def val_split():
    return load_split("pets09_occ_val", default_root("pets09_occ_val"))


def _gap(a: list[ReIDRecord], b: list[ReIDRecord]) -> int:
    frames_b = np.array(sorted({r.meta["frame"] for r in b}))
    return int(min(np.abs(frames_b - r.meta["frame"]).min() for r in a))


def test_val_readers_are_bundled_and_read_training_rows_only(occ_split, val_split):
    holistic = load_split("pets09_holistic_val", default_root("pets09_holistic_val"))
    training_paths = {r.path for r in occ_split.train}
    for split in (val_split, holistic):
        records = split.train + split.query + split.gallery
        assert all(r.meta["split"] == "train" for r in records)
        assert {r.path for r in records} <= training_paths
        assert split.camid_is_track


def test_val_training_and_validation_frames_are_a_test_chunk_apart(val_split):
    held = val_split.query + val_split.gallery
    assert _gap(val_split.train, held) > PROTOCOL.chunk_frames > PROTOCOL.guard_frames
    for track in {r.camid for r in held}:  # and so within every track
        own = [r for r in val_split.train if r.camid == track]
        if own:
            assert _gap(own, [r for r in held if r.camid == track]) > PROTOCOL.chunk_frames
    held_chunks = {chunk_of(r.meta["frame"]) for r in held}
    assert held_chunks.isdisjoint({chunk_of(r.meta["frame"]) for r in val_split.train})
    assert all(chunk % 2 == 0 for chunk in held_chunks)  # training chunks only


def test_whole_chunks_are_held_out_and_no_other_training_crop_is_lost(occ_split, val_split):
    chunks = validation_chunks(occ_split.train)
    assert chunks == [2, 6, 10, 14]
    held = [r for r in occ_split.train if chunk_of(r.meta["frame"]) in chunks]
    assert sorted(r.path for r in val_split.train + held) == sorted(r.path for r in occ_split.train)


def test_val_queries_are_occluded_answerable_and_usable(val_split):
    assert all(r.meta["occluded_fraction"] >= PROTOCOL.query_min_occlusion for r in val_split.query)
    assert all(r.meta["occluded_fraction"] < PROTOCOL.holistic_max_occlusion for r in val_split.gallery)
    tracks: dict[int, set[int]] = {}
    for r in val_split.gallery:
        tracks.setdefault(r.pid, set()).add(r.camid)
    assert all(tracks.get(q.pid, set()) - {q.camid} for q in val_split.query)
    assert {r.pid for r in val_split.query} <= {r.pid for r in val_split.train}  # closed set, as the test split
    assert len(val_split.query) == 71 and len(val_split.gallery) == 436 and len(val_split.train) == 353
    assert len(set(occlusion_events(val_split.query))) == 19
    assert {r.meta["occluder"] for r in val_split.query} == {"person", "pole", "sign"}


def test_holistic_val_uses_its_gallery_as_queries(val_split):
    holistic = load_split("pets09_holistic_val", default_root("pets09_holistic_val"))
    assert holistic.query == holistic.gallery == val_split.gallery
    assert holistic.train == val_split.train


def _record(frame: int, track: int, pid: int = 1, occluded: float = 0.0, occluder: str = "none") -> ReIDRecord:
    meta = {"frame": frame, "occluded_fraction": occluded, "occluder": occluder, "split": "train"}
    return ReIDRecord(f"t{track}_f{frame}.jpg", pid, track, meta)


def test_carving_drops_training_crops_inside_the_guard_of_a_held_out_chunk():
    protocol = Protocol(chunk_frames=50, guard_frames=10)
    train = [_record(frame, 1) for frame in (10, 40, 42, 44, 58, 62, 90, 96, 100, 112)]
    # chunk 1 (frames 51-100) held out: its crops are 58..100; 44 (14 before 58) stays, 42 is 16 away and stays
    kept, _, gallery = carve_validation(train, protocol, chunks=[1])
    assert [r.meta["frame"] for r in gallery] == [58, 62, 90, 96, 100]
    assert [r.meta["frame"] for r in kept] == [10, 40, 42, 44, 112]
    train.append(_record(50, 1))  # 8 frames before the held-out 58
    train.append(_record(108, 1))  # 8 frames after the held-out 100
    kept, _, _ = carve_validation(train, protocol, chunks=[1])
    assert [r.meta["frame"] for r in kept] == [10, 40, 42, 44, 112]


def test_carving_keeps_only_answerable_occluded_queries():
    protocol = Protocol(chunk_frames=50, guard_frames=10)
    train = [
        _record(10, 1),
        _record(60, 1, occluded=0.3, occluder="sign"),  # person 1's only held-out track: unanswerable
        _record(62, 2, pid=2, occluded=0.5, occluder="pole"),  # answered by track 3
        _record(64, 2, pid=2, occluded=0.1, occluder="pole"),  # neither query nor gallery
        _record(66, 3, pid=2),
        _record(68, 1),
    ]
    _, query, gallery = carve_validation(train, protocol, chunks=[1])
    assert [(r.camid, r.meta["frame"]) for r in query] == [(2, 62)]
    assert [(r.camid, r.meta["frame"]) for r in gallery] == [(3, 66), (1, 68)]


def _write_manifest(folder: Path, rows: list[tuple]) -> Path:
    """A manifest of made-up rows (role, pid, track, frame, occluder, fraction) pointing at real crops."""
    crops = sorted((BENCH / "crops" / "gallery").glob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "pid", "camid", "track", "frame", "occluder", "occluded_fraction", "split", "role"])
        for index, (role, pid, track, frame, occluder, fraction) in enumerate(rows):
            split = "train" if role == "train" else "test"
            writer.writerow([crops[index], pid, track, track, frame, occluder, fraction, split, role])
    return folder


def test_proximity_on_a_hand_made_manifest(tmp_path):
    root = _write_manifest(
        tmp_path / "tiny",
        [
            ("train", 1, 1, 10, "none", 0.0),
            ("train", 1, 1, 20, "none", 0.0),
            ("train", 1, 1, 40, "sign", 0.3),
            ("train", 2, 4, 100, "none", 0.0),
            ("train", 2, 4, 120, "pole", 0.2),
            ("train", 2, 4, 30, "pole", 0.01),
            ("query", 1, 1, 52, "sign", 0.4),  # 12 from the sign crop at 40
            ("query", 1, 1, 70, "person", 0.4),  # 30 from 40 (a sign crop): no same-kind crop
            ("query", 2, 3, 75, "pole", 0.5),  # track 3 has no training crop
            ("query", 2, 4, 110, "pole", 0.5),  # 10 from both 100 (none) and 120 (pole)
            ("query", 2, 4, 66, "pole", 0.5),  # 34 from 100; the pole crop at 30 is 36 away
            ("gallery", 1, 2, 300, "none", 0.0),
            ("gallery", 2, 5, 300, "none", 0.0),
        ],
    )
    split = load_split("pets09_occ", root)
    proximity = query_proximity(split)
    assert proximity["nearest_train"].tolist() == [12, 30, math.inf, 10, 34]
    assert proximity["nearest_train_occluder"].tolist() == ["sign", "sign", "", "none", "none"]
    assert proximity["nearest_same_occluder"].tolist() == [True, False, False, True, False]
    assert proximity["nearest_same_pass"].tolist() == [12, math.inf, math.inf, 10, 36]
    assert proximity["bin"].tolist() == ["<= 20", "21-30", "> 48", "<= 20", "31-48"]
    masks = subsets(proximity, clear_of=(25, 35))
    assert masks["no same pass <= 25"].tolist() == [False, True, True, False, True]
    assert masks["no same pass <= 35"].tolist() == [False, True, True, False, True]
    assert masks["same pass <= 35"].tolist() == [True, False, False, True, False]
    assert subsets(proximity, clear_of=(36,))["no same pass <= 36"].tolist() == [False, True, True, False, False]


def test_distance_bins_partition_every_distance():
    labels = bin_labels()
    assert labels == ["<= 20", "21-30", "31-48", "> 48"]
    for distance, label in ((0, "<= 20"), (20, "<= 20"), (21, "21-30"), (30, "21-30"), (31, "31-48")):
        assert distance_bin(distance) == label
    assert distance_bin(48) == "31-48" and distance_bin(49) == "> 48" and distance_bin(math.inf) == "> 48"


def test_bins_partition_the_pets09_queries_as_the_review_measured(occ_split):
    proximity = query_proximity(occ_split)
    masks = subsets(proximity)
    bins = np.stack([mask for name, mask in masks.items() if name.startswith("nearest ")])
    assert (bins.sum(axis=0) == 1).all() and masks[ALL].sum() == len(occ_split.query)
    distances = proximity["nearest_train"]
    assert distances.min() > PROTOCOL.guard_frames and distances.max() <= 48 and distances.median() == 21
    near_same = proximity["nearest_same_occluder"] & (distances <= 20)
    assert int(near_same.sum()) == 29  # 14 % of 213


def test_summary_scores_each_subset():
    proximity = pd.DataFrame(
        {"bin": ["<= 20", "<= 20", "21-30", "31-48"], "nearest_same_pass": [10.0, 40.0, 26.0, math.inf]}
    )
    scores = {
        "m": pd.DataFrame({"rank1": [1.0, 0.0, 1.0, np.nan], "ap": [1.0, 0.5, 0.25, np.nan], "event": [0, 0, 1, 2]})
    }
    summary = summarise(proximity, scores, clear_of=(25,)).set_index("subset")
    assert summary.loc["all", "queries"] == 4 and summary.loc["all", "events"] == 3
    assert summary.loc["all", "rank1"] == pytest.approx(2 / 3)  # a skipped query (NaN) does not count
    assert summary.loc["nearest <= 20", "mAP"] == pytest.approx(0.75)
    assert summary.loc["nearest > 48", "queries"] == 0 and math.isnan(summary.loc["nearest > 48", "rank1"])
    assert summary.loc["no same pass <= 25", "queries"] == 3 and summary.loc["same pass <= 25", "queries"] == 1
    assert summary.loc["no same pass <= 25", "mAP"] == pytest.approx(0.375)


def test_memory_gain_compares_near_duplicate_queries_with_the_rest():
    near = np.array([True, True, False, False, False, True])
    events = np.array([0, 0, 1, 1, 2, 3])
    peer = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    assert memory_gain(peer, peer, near, events) == (0.0, 0.0, 0.0)
    model = peer + near  # one point more on every near query; a score of 2 is fine for the arithmetic
    assert memory_gain(model, peer, near, events) == pytest.approx((1.0, 1.0, 1.0))
    model = np.where(near, peer, peer - 0.5)
    model[2] = np.nan  # a skipped query counts for neither side
    point, low, high = memory_gain(model, peer, near, events)
    assert point == pytest.approx(0.5) and low == pytest.approx(0.5) and high == pytest.approx(0.5)
    varied = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 1.0])  # near events differ: 0.5 and 1.0 better than the peer
    point, low, high = memory_gain(varied + peer, peer, near, events)
    assert point == pytest.approx(2 / 3) and low == pytest.approx(0.5) and high == pytest.approx(1.0)
    per_query = pd.DataFrame(
        {"nearest_same_pass": [10.0, 20, 30, 40, 50, 60], "event": events, "m rank1": model, "m ap": model}
    )
    per_query["p rank1"], per_query["p ap"] = peer, peer
    gains = memory_gains(per_query, ["m"], ["p"], clear_of=(20, 35))
    assert gains["queries"].tolist() == [2, 3] and gains["events"].tolist() == [1, 2]
    # G = 20: the first two queries (no gain) against the others, 0.5 behind on two of three scored ones
    assert gains["rank1_gain"].iloc[0] == pytest.approx(1 / 3) and gains["mAP_gain"].iloc[0] == pytest.approx(1 / 3)


def test_cli_takes_several_checkpoints_and_peers():
    args = build_parser().parse_args(
        ["bench", "proximity", "--checkpoint", "a", "--checkpoint", "b", "--peer", "omz-0277", "--peer", "p2"]
    )
    assert args.checkpoints == ["a", "b"] and args.checkpoint == "b" and args.peer == ["omz-0277", "p2"]
    masks = build_parser().parse_args(["bench", "masks", "--checkpoint", "c"])
    assert masks.checkpoint == "c"
