"""CUHK01 on the bundled folder: the literature's splits, the validation protocols, the occluded queries, layout
errors, and the deterministic synthetic occluder behind `cuhk01_occ`."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dpmpp.data import build_cuhk01
from dpmpp.data.build_cuhk01 import FRACTION_RANGE, KIND_WEIGHTS, SEED, occlude
from dpmpp.data.datasets import DatasetLayoutError, load_split
from dpmpp.data.datasets.cuhk01 import NUM_IDS, split_ids
from dpmpp.data.occluders import load_bank
from dpmpp.paths import ASSETS

ROOT = ASSETS / "cuhk01"
BANK = ASSETS / "pets09_occ" / "occluders"


def _pids(records) -> set[int]:
    return {r.pid for r in records}


@pytest.fixture(scope="module")
def test_split():
    return load_split("cuhk01", ROOT)


@pytest.fixture(scope="module")
def occlusion_rows() -> list[dict]:
    with open(ROOT / "occlusions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_test_protocol_has_the_literatures_sizes_and_cameras(test_split):
    assert len(_pids(test_split.train)) == 485 and len(test_split.train) == 1940
    assert len(_pids(test_split.query)) == 486 and len(test_split.query) == 972
    assert len(_pids(test_split.gallery)) == 486 and len(test_split.gallery) == 972
    assert {r.camid for r in test_split.query} == {0} and {r.meta["image"] for r in test_split.query} == {1, 2}
    assert {r.camid for r in test_split.gallery} == {1} and {r.meta["image"] for r in test_split.gallery} == {3, 4}
    assert _pids(test_split.query) == _pids(test_split.gallery)
    assert not _pids(test_split.train) & _pids(test_split.query)
    assert _pids(test_split.train) | _pids(test_split.query) == set(range(1, NUM_IDS + 1))


def test_splits_differ_and_are_deterministic(test_split):
    again = load_split("cuhk01", ROOT, split=0)
    assert [r.path for r in again.query] == [r.path for r in test_split.query]
    assert [r.path for r in again.train] == [r.path for r in test_split.train]
    other = load_split("cuhk01", ROOT, split=1)
    assert _pids(other.query) != _pids(test_split.query)
    assert len(_pids(other.query)) == 486
    assert split_ids(3) == split_ids(3) and split_ids(3) != split_ids(4)
    train, val, test = split_ids(0)
    order = (np.random.default_rng(0).permutation(NUM_IDS) + 1).tolist()
    assert sorted(val) == sorted(order[:100]) and sorted(test) == sorted(order[485:])
    assert sorted(train + val + test) == list(range(1, NUM_IDS + 1))
    with pytest.raises(ValueError, match="split must be an integer"):
        split_ids(-1)


@pytest.mark.parametrize("name", ["cuhk01_val", "cuhk01_occ_val"])
def test_validation_holds_out_100_training_identities(test_split, name):
    val = load_split(name, ROOT)
    assert len(_pids(val.train)) == 385 and len(val.train) == 4 * 385
    assert _pids(val.query) == _pids(val.gallery) and len(_pids(val.query)) == 100
    assert len(val.query) == 200 and len(val.gallery) == 200
    assert not _pids(val.train) & _pids(val.query)
    assert _pids(val.train) | _pids(val.query) == _pids(test_split.train)  # drawn from the 485 training ids
    assert not (_pids(val.train) | _pids(val.query)) & _pids(test_split.query)  # no test identity anywhere


def test_occluded_queries_are_the_clean_queries_occluded(test_split):
    occ = load_split("cuhk01_occ", ROOT)
    assert [r.path for r in occ.gallery] == [r.path for r in test_split.gallery]
    assert [r.path for r in occ.train] == [r.path for r in test_split.train]
    assert len(occ.query) == len(test_split.query)
    for clean, occluded in zip(test_split.query, occ.query):
        assert occluded.pid == clean.pid and occluded.camid == clean.camid == 0
        assert occluded.meta["clean_path"] == clean.path
        assert Path(occluded.path).parent.name == "occluded" and Path(occluded.path).stem == Path(clean.path).stem
        assert occluded.meta["occluder_kind"] in KIND_WEIGHTS and 0 < occluded.meta["occluded_fraction"] < 1


def test_a_folder_without_images_names_the_expected_layout(tmp_path):
    (tmp_path / "notes.txt").write_text("not a dataset")
    (tmp_path / "random.bin").write_bytes(np.random.default_rng(0).bytes(64))
    with pytest.raises(DatasetLayoutError, match=r"images or campus/ of NNNNMMM\.png\|jpg.*notes\.txt"):
        load_split("cuhk01", tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "photo.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetLayoutError, match="filename rule"):
        load_split("cuhk01", tmp_path)


def test_a_missing_identity_or_occlusion_index_is_named(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((ROOT / "images").iterdir()):
        if not path.name.startswith("0007"):
            (images / path.name).symlink_to(path)
    with pytest.raises(DatasetLayoutError, match=r"4 images for each of 971 identities.*1 identities differ.*\[7\]"):
        load_split("cuhk01", tmp_path)
    shutil.rmtree(images)
    images.symlink_to(ROOT / "images")
    assert len(load_split("cuhk01", tmp_path).query) == 972
    with pytest.raises(DatasetLayoutError, match="expected occlusions.csv and occluded/"):
        load_split("cuhk01_occ", tmp_path)


def test_every_bundled_occlusion_is_in_its_kinds_range(occlusion_rows):
    bank = {o.name: o.kind for o in load_bank(BANK)}
    assert len(occlusion_rows) == 2 * NUM_IDS
    assert {row["image"][-3:] for row in occlusion_rows} == {"001", "002"}  # camera A only
    counts = {kind: 0 for kind in KIND_WEIGHTS}
    for row in occlusion_rows:
        kind, fraction = row["occluder_kind"], float(row["occluded_fraction"])
        assert bank[row["occluder"]] == kind
        low, high = FRACTION_RANGE[kind]
        assert low <= fraction <= high, row  # no copy needed the closest-of-50 fallback
        assert (ROOT / "occluded" / row["path"]).is_file()
        counts[kind] += 1
    for kind, weight in KIND_WEIGHTS.items():
        assert abs(counts[kind] / len(occlusion_rows) - weight) < 0.03, counts


def test_the_builder_reproduces_the_bundled_occlusion_index(occlusion_rows):
    """The placement depends on the seed and the image size only, so the bundled JPEGs replay the index."""
    bank = load_bank(BANK)
    for row in occlusion_rows[::97]:
        pid, image = int(row["image"][:4]), int(row["image"][4:])
        clean = Image.open(ROOT / "images" / f"{row['image']}.jpg").convert("RGB")
        occlusion = occlude(clean, bank, np.random.default_rng([SEED, pid, image]))
        assert occlusion.occluder.name == row["occluder"]
        assert (f"{occlusion.params.x:.4f}", f"{occlusion.params.y:.4f}") == (row["x"], row["y"])
        assert f"{occlusion.params.scale:.4f}" == row["scale"]
        assert f"{occlusion.fraction:.4f}" == row["occluded_fraction"]


def _placed_box(occlusion, size: tuple[int, int], margin: int = 2) -> np.ndarray:
    """[H, W] bool: where the occluder was pasted (its box from x, y, scale and its aspect), plus `margin` pixels."""
    width, height = size
    with Image.open(occlusion.occluder.path) as source:
        aspect = source.width / source.height  # the pole is resized keeping its aspect
    box_height = occlusion.params.scale * height
    box_width = aspect * box_height
    x0, x1 = occlusion.params.x * width - box_width / 2, occlusion.params.x * width + box_width / 2
    y0, y1 = occlusion.params.y * height - box_height / 2, occlusion.params.y * height + box_height / 2
    cols, rows = np.arange(width), np.arange(height)
    inside_x = (cols >= x0 - margin) & (cols < x1 + margin)
    inside_y = (rows >= y0 - margin) & (rows < y1 + margin)
    return inside_y[:, None] & inside_x[None, :]


def test_occlude_is_deterministic_in_range_and_touches_only_the_occluder():
    bank = load_bank(BANK)
    clean = Image.open(ROOT / "images" / "0042001.jpg").convert("RGB")
    pixels = np.asarray(clean)
    kinds, placements = set(), set()
    for seed in range(24):
        first = occlude(clean, bank, np.random.default_rng([SEED, seed]))
        second = occlude(clean, bank, np.random.default_rng([SEED, seed]))
        assert first.image.tobytes() == second.image.tobytes() and first.params == second.params
        kind = first.occluder.kind
        kinds.add(kind)
        placements.add(first.params)
        low, high = FRACTION_RANGE[kind]
        assert low <= first.fraction <= high, (seed, kind, first.fraction)
        changed = (np.asarray(first.image) != pixels).any(axis=2)
        box = _placed_box(first, clean.size)
        assert not changed[~box].any(), (seed, kind)  # nothing outside the pasted occluder moves
        assert changed.mean() >= 0.9 * first.fraction  # and what it hides does change
    assert kinds == set(KIND_WEIGHTS) and len(placements) == 24  # other seeds, other placements


def test_occlude_needs_every_kind_in_the_bank():
    bank = [o for o in load_bank(BANK) if o.kind != "pole"]
    with pytest.raises(ValueError, match=r"no \['pole'\] occluders"):
        occlude(Image.new("RGB", (60, 160)), bank, np.random.default_rng(0))


def test_the_builder_module_names_the_bundled_quality():
    assert build_cuhk01.JPEG_QUALITY == 95
    with Image.open(ROOT / "images" / "0001001.jpg") as image:
        assert image.format == "JPEG" and image.size == (60, 160)
