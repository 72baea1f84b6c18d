"""Benchmark readers on small fake trees generated in `tmp_path` (readers list files, they never open images)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from PIL import Image

from dpmpp.data.datasets import DatasetLayoutError, UnknownDatasetError, dataset_names, load_split
from dpmpp.data.records import ReIDRecord, Split

READERS = ["dukemtmc", "manifest", "market1501", "msmt17", "occluded_duke", "occluded_reid", "partial_reid"]


def touch(root: Path, *relative: str) -> None:
    for name in relative:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def write_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 2), (200, 30, 30)).save(path)


def counts(records: list[ReIDRecord]) -> tuple[int, int, int]:
    """(# ids, # images, # cameras)."""
    return len({r.pid for r in records}), len(records), len({r.camid for r in records})


def assert_well_formed(split: Split) -> None:
    for records in (split.train, split.query, split.gallery):
        assert [r.path for r in records] == sorted(r.path for r in records)
        for record in records:
            assert os.path.isabs(record.path) and os.path.exists(record.path)
            assert type(record.pid) is int and type(record.camid) is int


# --- Market-1501 -------------------------------------------------------------------------------------------------

MARKET_FILES = [
    "bounding_box_train/0002_c1s1_000451_03.jpg",
    "bounding_box_train/0002_c2s1_000301_01.jpg",
    "bounding_box_train/0007_c3s3_077419_02.jpg",
    "bounding_box_train/-1_c1s1_000001_00.jpg",
    "query/0002_c1s1_000551_01.jpg",
    "query/0007_c6s1_000076_01.jpg",
    "bounding_box_test/0002_c2s1_000801_01.jpg",
    "bounding_box_test/0007_c1s1_001051_03.jpg",
    "bounding_box_test/0000_c3s1_000151_01.jpg",
    "bounding_box_test/-1_c1s1_000401_03.jpg",
    "bounding_box_test/Thumbs.db",
]


@pytest.fixture
def market_root(tmp_path: Path) -> Path:
    touch(tmp_path, *MARKET_FILES)
    return tmp_path


def test_market_counts_junk_distractors_and_cameras(market_root: Path) -> None:
    split = load_split("market1501", market_root)
    assert split.name == "market1501"
    assert counts(split.train) == (2, 3, 3)
    assert counts(split.query) == (2, 2, 2)
    assert counts(split.gallery) == (3, 3, 3)
    all_records = split.train + split.query + split.gallery
    assert -1 not in {r.pid for r in all_records}
    assert 0 in {r.pid for r in split.gallery}
    assert sorted({r.camid for r in split.query}) == [0, 5]  # c1 -> 0, c6 -> 5
    assert_well_formed(split)


def test_market_meta_and_paths(market_root: Path) -> None:
    split = load_split("market1501", market_root)
    first = split.train[0]
    assert first.path == os.path.abspath(market_root / "bounding_box_train/0002_c1s1_000451_03.jpg")
    assert first.meta == {"filename": "0002_c1s1_000451_03.jpg", "sequence": 1, "frame": 451}
    assert (first.pid, first.camid) == (2, 0)


def test_market_release_subfolder_and_real_images(tmp_path: Path) -> None:
    release = tmp_path / "Market-1501-v15.09.15"
    for name in MARKET_FILES[:-1]:
        write_image(release / name)
    split = load_split("market1501", tmp_path)
    assert counts(split.gallery) == (3, 3, 3)
    assert all(r.path.startswith(str(release)) for r in split.query)


def test_market_is_deterministic(market_root: Path) -> None:
    assert load_split("market1501", market_root) == load_split("market1501", market_root)


def test_split_summary_table(market_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dpmpp.data.datasets"):
        split = load_split("market1501", market_root)
    summary = split.summary()
    assert "=> Loaded market1501" in summary
    assert "  train    |     2 |        3 |         3" in summary
    assert "  query    |     2 |        2 |         2" in summary
    assert "  gallery  |     3 |        3 |         3" in summary
    assert split.summary_rows() == [("train", 2, 3, 3), ("query", 2, 2, 2), ("gallery", 3, 3, 3)]
    assert summary in caplog.text  # load_split logs the table
    assert Split([], [], []).summary().startswith("=> Loaded dataset")


def test_missing_folder_names_expected_and_found(tmp_path: Path) -> None:
    touch(tmp_path, "bounding_box_train/0002_c1s1_000451_03.jpg", "query/0002_c1s1_000551_01.jpg", "notes.txt")
    (tmp_path / "gallery").mkdir()
    with pytest.raises(DatasetLayoutError) as error:
        load_split("market1501", tmp_path)
    message = str(error.value)
    assert "bounding_box_test" in message and "missing ['bounding_box_test']" in message
    assert "'gallery/'" in message and "'notes.txt'" in message and "'query/'" in message


def test_folder_without_matching_images_shows_rule_and_names(market_root: Path) -> None:
    for path in (market_root / "query").iterdir():
        path.unlink()
    touch(market_root, *(f"query/person{i}.jpg" for i in range(7)))
    with pytest.raises(DatasetLayoutError) as error:
        load_split("market1501", market_root)
    message = str(error.value)
    assert "_c(\\d)" in message and "query" in message and "found 7 files" in message
    assert "person0.jpg" in message and "person4.jpg" in message and "person5.jpg" not in message


def test_unknown_dataset_lists_registered_names(tmp_path: Path) -> None:
    with pytest.raises(UnknownDatasetError) as error:
        load_split("market", tmp_path)
    message = str(error.value)
    assert "unknown dataset 'market'" in message
    for name in READERS:
        assert name in message
    assert set(READERS) <= set(dataset_names())


def test_root_that_is_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="is not a folder"):
        load_split("market1501", tmp_path / "nowhere")


# --- DukeMTMC-reID and Occluded-Duke -----------------------------------------------------------------------------

DUKE_FILES = [
    "bounding_box_train/0001_c2_f0046182.jpg",
    "bounding_box_train/0001_c5_f0051341.jpg",
    "bounding_box_train/0003_c8_f0000011.jpg",
    "query/0005_c2_f0046985.jpg",
    "bounding_box_test/0005_c7_f0011111.jpg",
    "bounding_box_test/0009_c7_f0012222.jpg",
]


@pytest.mark.parametrize(("name", "subfolder"), [("dukemtmc", "DukeMTMC-reID"), ("occluded_duke", "Occluded_Duke")])
@pytest.mark.parametrize("nested", [False, True])
def test_duke_layouts(tmp_path: Path, name: str, subfolder: str, nested: bool) -> None:
    touch(tmp_path / subfolder if nested else tmp_path, *DUKE_FILES)
    split = load_split(name, tmp_path)
    assert split.name == name
    assert counts(split.train) == (2, 3, 3)
    assert counts(split.query) == (1, 1, 1)
    assert counts(split.gallery) == (2, 2, 1)
    assert sorted({r.camid for r in split.train}) == [1, 4, 7]
    assert split.query[0].meta == {"filename": "0005_c2_f0046985.jpg", "frame": 46985}
    assert_well_formed(split)


def test_duke_subfolder_of_the_other_benchmark_is_not_accepted(tmp_path: Path) -> None:
    touch(tmp_path / "Occluded_Duke", *DUKE_FILES)
    with pytest.raises(DatasetLayoutError, match="Occluded_Duke/"):
        load_split("dukemtmc", tmp_path)


# --- MSMT17 ------------------------------------------------------------------------------------------------------

MSMT_LISTS = {
    "list_train.txt": ["0000/0000_000_01_0303morning_0015_0.jpg 0", "0000/0000_001_05_0303morning_0016_0.jpg 0"],
    "list_val.txt": ["0001/0001_000_02_0303noon_0001_1.jpg 1"],
    "list_query.txt": ["0000/0000_000_03_0113morning_0001_0.jpg 0", "0004/0004_001_15_0113noon_0002_0.jpg 4"],
    "list_gallery.txt": ["0000/0000_002_04_0113morning_0003_0.jpg 0", "0004/0004_003_04_0113noon_0004_0.jpg 4"],
}


def make_msmt(root: Path, train_dir: str = "train", test_dir: str = "test") -> None:
    for list_name, lines in MSMT_LISTS.items():
        image_dir = test_dir if list_name in ("list_query.txt", "list_gallery.txt") else train_dir
        touch(root / image_dir, *(line.split()[0] for line in lines))
        (root / list_name).write_text("\n".join(lines) + "\n\n")


def test_msmt17_lists_and_cameras(tmp_path: Path) -> None:
    make_msmt(tmp_path)
    split = load_split("msmt17", tmp_path)
    assert counts(split.train) == (2, 3, 3)  # train + val lists
    assert counts(split.query) == (2, 2, 2)
    assert counts(split.gallery) == (2, 2, 1)
    assert sorted(r.camid for r in split.train) == [0, 1, 4]
    assert sorted(r.camid for r in split.query) == [2, 14]
    assert split.train[-1].meta == {"filename": "0001_000_02_0303noon_0001_1.jpg", "list": "val"}
    assert split.query[0].path == os.path.abspath(tmp_path / "test/0000/0000_000_03_0113morning_0001_0.jpg")
    assert_well_formed(split)


def test_msmt17_v2_subfolder(tmp_path: Path) -> None:
    make_msmt(tmp_path / "MSMT17_V2", "mask_train_v2", "mask_test_v2")
    split = load_split("msmt17", tmp_path)
    assert counts(split.train) == (2, 3, 3)
    assert "mask_test_v2" in split.gallery[0].path


def test_msmt17_missing_list_file(tmp_path: Path) -> None:
    make_msmt(tmp_path)
    (tmp_path / "list_val.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"missing \['list_val.txt'\]"):
        load_split("msmt17", tmp_path)


def test_msmt17_missing_image_folders_names_both_layouts(tmp_path: Path) -> None:
    make_msmt(tmp_path)
    (tmp_path / "test").rename(tmp_path / "testing")
    with pytest.raises(DatasetLayoutError) as error:
        load_split("msmt17", tmp_path)
    message = str(error.value)
    assert "['train', 'test']" in message and "mask_test_v2" in message and "'testing/'" in message


def test_msmt17_bad_line_and_missing_image(tmp_path: Path) -> None:
    make_msmt(tmp_path)
    (tmp_path / "list_query.txt").write_text("0000/0000_000_03_0113morning_0001_0.jpg 0\n0004/badname.jpg 4\n")
    with pytest.raises(DatasetLayoutError, match="line 2: '0004/badname.jpg 4'"):
        load_split("msmt17", tmp_path)
    make_msmt(tmp_path)
    (tmp_path / "test/0004/0004_003_04_0113noon_0004_0.jpg").unlink()
    with pytest.raises(DatasetLayoutError, match="1 of 2 image paths .* do not exist.*0004_003_04"):
        load_split("msmt17", tmp_path)


# --- Occluded-REID -----------------------------------------------------------------------------------------------


def test_occluded_reid(tmp_path: Path) -> None:
    root = tmp_path / "Occluded_REID"
    touch(root, "occluded_body_images/001/001_01.tif", "occluded_body_images/001/001_02.tif")
    touch(root, "occluded_body_images/002/002_01.jpg", "occluded_body_images/002/notes.txt")
    touch(root, "whole_body_images/001/001_01.tif", "whole_body_images/002/002_01.png")
    touch(root, "whole_body_images/003/003_01.tif")
    split = load_split("occluded_reid", tmp_path)
    assert split.train == []
    assert counts(split.query) == (2, 3, 1)
    assert counts(split.gallery) == (3, 3, 1)
    assert {r.camid for r in split.query} == {0} and {r.camid for r in split.gallery} == {1}
    assert split.query[1].meta == {"filename": "001_02.tif", "index": 2}
    assert_well_formed(split)


def test_occluded_reid_missing_gallery(tmp_path: Path) -> None:
    touch(tmp_path, "occluded_body_images/001/001_01.tif")
    with pytest.raises(DatasetLayoutError, match=r"missing \['whole_body_images'\]"):
        load_split("occluded_reid", tmp_path)


# --- Partial-REID ------------------------------------------------------------------------------------------------


@pytest.fixture
def partial_root(tmp_path: Path) -> Path:
    root = tmp_path / "Partial-REID"
    touch(root, "partial_body_images/001_001.jpg", "partial_body_images/002_001.jpg", "partial_body_images/002_002.jpg")
    touch(root, "occluded_body_images/005/005_001.jpg")
    touch(root, *(f"whole_body_images/{pid:03d}_001.jpg" for pid in (1, 2, 5)))
    return tmp_path


def test_partial_reid_default_query(partial_root: Path) -> None:
    split = load_split("partial_reid", partial_root)
    assert split.train == []
    assert counts(split.query) == (2, 3, 1)
    assert counts(split.gallery) == (3, 3, 1)
    assert {r.camid for r in split.query} == {0} and {r.camid for r in split.gallery} == {1}
    assert all("partial_body_images" in r.path for r in split.query)
    assert_well_formed(split)


def test_partial_reid_query_dir_switch(partial_root: Path) -> None:
    split = load_split("partial_reid", partial_root, query_dir="occluded_body_images")
    assert counts(split.query) == (1, 1, 1)
    assert split.query[0].pid == 5 and "occluded_body_images" in split.query[0].path
    assert counts(split.gallery) == (3, 3, 1)


def test_partial_reid_rejects_unknown_query_dir(partial_root: Path) -> None:
    with pytest.raises(ValueError, match="query_dir must be one of .*partial_body_images.*whole_body_images"):
        load_split("partial_reid", partial_root, query_dir="whole_body_images")


# --- manifest ----------------------------------------------------------------------------------------------------


def write_csv(path: Path, *lines: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def test_manifest_relative_and_absolute_paths(tmp_path: Path) -> None:
    touch(tmp_path, "data/images/a.jpg", "data/images/b.jpg", "data/images/c.jpg", "elsewhere/d.jpg")
    absolute = tmp_path / "elsewhere/d.jpg"
    write_csv(
        tmp_path / "data/lists/mine.csv",
        "path,pid,camid,split,scene",
        "../images/b.jpg,3,1,query,street",
        "../images/a.jpg,3,0,train,street",
        f"{absolute},4,2,gallery,park",
        "../images/c.jpg, 3 ,0,gallery,street",
    )
    split = load_split("manifest", tmp_path, csv="data/lists/mine.csv")
    assert counts(split.train) == (1, 1, 1)
    assert counts(split.query) == (1, 1, 1)
    assert counts(split.gallery) == (2, 2, 2)
    assert split.query[0].path == os.path.abspath(tmp_path / "data/images/b.jpg")
    assert split.query[0].meta == {"scene": "street"}
    assert [r.path for r in split.gallery] == sorted([str(absolute), os.path.abspath(tmp_path / "data/images/c.jpg")])
    assert_well_formed(split)


def test_manifest_default_name_missing(tmp_path: Path) -> None:
    touch(tmp_path, "other.csv")
    with pytest.raises(DatasetLayoutError, match=r"missing \['manifest.csv'\].*other.csv"):
        load_split("manifest", tmp_path)


def test_manifest_missing_columns(tmp_path: Path) -> None:
    write_csv(tmp_path / "manifest.csv", "path,person,camid", "a.jpg,1,0")
    with pytest.raises(DatasetLayoutError) as error:
        load_split("manifest", tmp_path)
    message = str(error.value)
    assert "missing ['pid', 'split']" in message and "found ['path', 'person', 'camid']" in message


@pytest.mark.parametrize(
    ("bad_row", "expected"),
    [
        ("b.jpg,1,0,test", "row 2 .*split must be one of .*'test'"),
        ("b.jpg,x,0,query", "row 2 .*pid and camid must be integers.*'x'"),
        ("b.jpg,1,1.5,query", "row 2 .*camid='1.5'"),
    ],
)
def test_manifest_bad_rows_name_the_row(tmp_path: Path, bad_row: str, expected: str) -> None:
    touch(tmp_path, "a.jpg", "b.jpg")
    write_csv(tmp_path / "manifest.csv", "path,pid,camid,split", "a.jpg,1,0,gallery", bad_row)
    with pytest.raises(DatasetLayoutError, match=expected):
        load_split("manifest", tmp_path)


def test_manifest_missing_images_are_named_and_counted(tmp_path: Path) -> None:
    touch(tmp_path, "a.jpg")
    write_csv(
        tmp_path / "manifest.csv", "path,pid,camid,split", "a.jpg,1,0,query", "b.jpg,1,1,gallery", "c.jpg,2,1,gallery"
    )
    with pytest.raises(DatasetLayoutError) as error:
        load_split("manifest", tmp_path)
    message = str(error.value)
    assert "2 of 3 image paths" in message and "b.jpg" in message and "c.jpg" in message


def test_manifest_needs_query_and_gallery(tmp_path: Path) -> None:
    touch(tmp_path, "a.jpg")
    write_csv(tmp_path / "manifest.csv", "path,pid,camid,split", "a.jpg,1,0,train")
    with pytest.raises(DatasetLayoutError, match="0 query and 0 gallery"):
        load_split("manifest", tmp_path)
