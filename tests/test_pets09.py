"""The bundled PETS09-S2L1 benchmark: reproducible from its sources, readable, and a real re-ID protocol."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from dpmpp.data.build_pets09 import Protocol, build, manifest_text, plan, read_groups, read_gt
from dpmpp.data.datasets import DatasetLayoutError, load_split
from dpmpp.data.pets09_geometry import Box, occluding_track, occlusion
from dpmpp.paths import ASSETS

BENCH = ASSETS / "pets09_occ"


def test_manifest_reproduces_exactly_from_the_bundled_sources():
    rows = plan(read_gt(BENCH / "source/gt.txt"), read_groups(BENCH / "source/person_groups_proposed.csv"), Protocol())
    assert manifest_text(rows) == (BENCH / "manifest.csv").read_text()


def test_split_protocol():
    split = load_split("pets09_occ", BENCH)
    assert len(split.query) > 150 and len(split.gallery) > 500 and len(split.train) > 500
    train_frames = {r.meta["frame"] for r in split.train}
    test_frames = {r.meta["frame"] for r in split.query + split.gallery}
    gap = min(abs(a - b) for a in train_frames for b in test_frames)
    assert gap >= Protocol().guard_frames  # train and test frames are separated by the guard gap
    assert all(r.meta["occluded_fraction"] >= 0.15 for r in split.query)
    assert all(r.meta["occluded_fraction"] < 0.02 for r in split.gallery)
    gallery_tracks = {}
    for r in split.gallery:
        gallery_tracks.setdefault(r.pid, set()).add(r.camid)
    # every query can be answered only by another track (camid) of the same person
    assert all(gallery_tracks.get(q.pid, set()) - {q.camid} for q in split.query)
    assert {r.pid for r in split.query} <= {r.pid for r in split.train}  # closed set, stated in the README
    occluders = Counter(r.meta["occluder"] for r in split.query)
    assert {"person", "pole", "sign"} <= set(occluders)


def test_holistic_variant_uses_gallery_as_queries():
    split = load_split("pets09_holistic", BENCH)
    assert split.query == split.gallery


def test_crops_are_at_source_resolution():
    split = load_split("pets09_occ", BENCH)
    for record in split.gallery[:50]:
        with Image.open(record.path) as image:
            assert image.width >= int(record.meta["bbox_width"]) - 1 or record.meta["bbox_left"] < 0
            assert image.height >= int(record.meta["bbox_height"]) - 1 or record.meta["bbox_top"] < 0


def test_occlusion_geometry():
    far = Box(1, 1, 300, 100, 40, 100)
    near = Box(1, 2, 320, 150, 40, 100)  # another person in front, lower on the ground plane
    fraction, kind, parts = occlusion(far, [far, near])
    assert kind == "person" and fraction == pytest.approx(0.5 * 0.5, abs=0.02)
    assert occlusion(near, [far, near])[0] == 0  # the farther person does not hide the nearer one
    behind_post = Box(1, 5, 400, 100, 40, 100)  # feet at y=200, above the post's foot: behind it
    fraction, kind, parts = occlusion(behind_post, [])
    assert kind == "pole" and parts["pole"] == pytest.approx(12 / 40, abs=0.01)
    in_front = Box(1, 6, 400, 350, 40, 100)  # feet at y=450: in front of the post
    assert occlusion(in_front, [])[0] == 0
    alone, kind_alone, _ = occlusion(Box(1, 3, 100, 400, 30, 80), [])
    assert alone == 0 and kind_alone == "none"
    cut, kind_cut, _ = occlusion(Box(1, 4, -15, 300, 30, 80), [])
    assert kind_cut == "border" and cut == pytest.approx(0.5, abs=0.02)


def test_the_occluding_person_is_the_nearer_one_hiding_most():
    far = Box(1, 1, 300, 100, 40, 100)
    slight = Box(1, 7, 335, 160, 40, 100)  # nearer, hides a 5-px strip
    heavy = Box(1, 2, 320, 150, 40, 100)  # nearer, hides a quarter
    behind = Box(1, 9, 300, 90, 40, 100)  # overlaps most but stands farther away: it hides nothing
    assert occluding_track(far, [far, slight, heavy, behind]) == 2
    assert occluding_track(far, [far, slight, behind]) == 7
    assert occluding_track(heavy, [far, heavy, behind]) is None


def test_manifest_names_the_occluding_person_of_person_occluded_crops():
    split = load_split("pets09_occ", BENCH)
    records = split.train + split.query + split.gallery
    behind_person = [r for r in records if r.meta["occluder"] == "person"]
    assert behind_person and all(int(r.meta["occluder_pid"]) not in (0, r.pid) for r in behind_person)
    assert all(r.meta["occluder_pid"] == "" for r in records if r.meta["occluder"] != "person")


def _synthetic_source(tmp_path: Path):
    """A short 768x576 video with two persons on three tracks (person A re-enters as track 3)."""
    video = tmp_path / "video.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 7, (768, 576))
    rows = []
    for frame in range(1, 121):
        image = np.full((576, 768, 3), 90, np.uint8)
        for track, x, colour in ((1, 100, (0, 0, 200)), (2, 300, (0, 200, 0)), (3, 500, (0, 0, 210))):
            if track == 3 and frame < 30:
                continue
            image[400:480, x : x + 30] = colour
            rows.append(f"{frame},{track},{x},400,30,80,1,-1,-1,-1")
        writer.write(image)
    writer.release()
    gt = tmp_path / "gt.txt"
    gt.write_text("\n".join(rows) + "\n")
    groups = tmp_path / "groups.csv"
    groups.write_text("track_id,proposed_person,confidence,track_frames,note\n1,PA,high,,\n2,PB,high,,\n3,PA,high,,\n")
    return video, gt, groups


def test_build_writes_crops_and_is_deterministic(tmp_path):
    video, gt, groups = _synthetic_source(tmp_path)
    rows = build(video, gt, groups, tmp_path / "a")
    build(video, gt, groups, tmp_path / "b")
    assert (tmp_path / "a/manifest.csv").read_bytes() == (tmp_path / "b/manifest.csv").read_bytes()
    assert rows and all(
        (tmp_path / "a" / r["path"]).read_bytes() == (tmp_path / "b" / r["path"]).read_bytes() for r in rows
    )
    with Image.open(tmp_path / "a" / rows[0]["path"]) as crop:
        assert crop.size == (30, 80)
        red, green, blue = np.asarray(crop).reshape(-1, 3).mean(axis=0)
        assert (red > 150) != (green > 150)  # the crop holds the coloured person, not background
    assert {r["role"] for r in rows} >= {"train", "gallery"}
    bank = (tmp_path / "a/occluders/bank.csv").read_text()
    assert "pole,pole" in bank and "sign,sign" in bank and "person_PA" in bank
    assert (tmp_path / "a/occluders/bank.csv").read_bytes() == (tmp_path / "b/occluders/bank.csv").read_bytes()


def test_build_data_cli_and_bad_video(tmp_path):
    video, gt, groups = _synthetic_source(tmp_path)
    command = [
        sys.executable,
        "-m",
        "dpmpp",
        "build-data",
        "pets09",
        "--video",
        str(video),
        "--gt",
        str(gt),
        "--groups",
        str(groups),
        "--out",
        str(tmp_path / "out"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "wrote" in result.stdout and (tmp_path / "out/manifest.csv").is_file()
    (tmp_path / "broken.avi").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="decode"):
        build(tmp_path / "broken.avi", gt, groups, tmp_path / "c")


def test_reader_errors_name_what_was_expected(tmp_path):
    with pytest.raises(DatasetLayoutError, match="manifest.csv"):
        load_split("pets09_occ", tmp_path)


def test_hsv_baseline_cli_json():
    command = [sys.executable, "-m", "dpmpp", "eval", "--baseline", "hsv", "--data", "pets09_occ", "--json"]
    result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    assert {"rank1", "rank5", "rank10", "mAP", "mINP", "num_query", "num_gallery"} <= set(result)
    split = load_split("pets09_occ", BENCH)
    assert result["num_query"] == len(split.query) and result["num_gallery"] == len(split.gallery)
    # The colour floor is well above chance (1 / 10 persons) but far from solved.
    assert 0.15 < result["rank1"] < 0.9
    assert result["rank1"] <= result["rank5"] <= result["rank10"]
