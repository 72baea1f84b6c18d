"""Person masks by background subtraction, and their path through the data pipeline into training."""

import numpy as np
import pytest
import torch
from PIL import Image

from dpmpp.data.dataset import ImageDataset
from dpmpp.data.datasets import load_split
from dpmpp.data.foreground import PersonMasks, box_slice, median_background, silhouette
from dpmpp.data.records import ReIDRecord
from dpmpp.data.transforms import build_transforms
from dpmpp.paths import ASSETS


def _scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(120, 6, (120, 160, 3)), 0, 255).astype(np.uint8)


def test_median_background_removes_moving_people():
    background = _scene()
    frames = []
    for k in range(9):  # a "person" walks across; every pixel is empty in most frames
        frame = background.copy()
        frame[30:90, 10 + 15 * k : 30 + 15 * k] = (200, 30, 30)
        frames.append(frame)
    assert np.abs(median_background(frames).astype(int) - background.astype(int)).max() == 0
    with pytest.raises(ValueError, match="H, W, 3"):
        median_background([np.zeros((4, 4))])


def test_silhouette_finds_the_person_and_not_the_background():
    background = _scene()
    crop = background.copy()
    crop[20:100, 50:90] = (30, 40, 200)
    mask = silhouette(crop, background)
    truth = np.zeros(mask.shape, bool)
    truth[20:100, 50:90] = True
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.9
    with pytest.raises(ValueError, match="differ in shape"):
        silhouette(crop, background[:10])


def test_person_masks_use_the_manifest_box(tmp_path):
    background = _scene()
    (tmp_path / "source").mkdir()
    Image.fromarray(background).save(tmp_path / "source" / "background.png")
    masks = PersonMasks.for_root(tmp_path)
    frame = background.copy()
    frame[40:80, 60:80] = (250, 250, 0)
    meta = {"bbox_left": 55.0, "bbox_top": 30.0, "bbox_width": 30.0, "bbox_height": 60.0}
    rows, columns = box_slice(meta, (160, 120))
    mask = masks(ReIDRecord("x.jpg", 1, 1, meta), frame[rows, columns])
    assert mask.shape == (60, 30)
    assert mask[10:50, 5:25].mean() > 0.95 and mask[:8].mean() < 0.05
    with pytest.raises(ValueError, match="box columns"):
        masks(ReIDRecord("x.jpg", 1, 1, {}), frame[rows, columns])
    assert PersonMasks.for_root(tmp_path / "nothing") is None


def test_bundled_masks_travel_with_the_image_through_flip_and_crop():
    split = load_split("pets09_occ", ASSETS / "pets09_occ")
    masks = PersonMasks.for_root(ASSETS / "pets09_occ")
    assert masks is not None
    flipped = ImageDataset(split.train, build_transforms(128, 64, True, flip_prob=1.0, pad=0), None, masks)
    plain = ImageDataset(split.train, build_transforms(128, 64, False), None, masks)
    a, b = flipped[5], plain[5]
    assert a["person"].shape == (1, 128, 64) and set(a["person"].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a["person"], b["person"].flip(-1))
    assert torch.allclose(a["image"], b["image"].flip(-1))
    # the bundled crops are tight boxes: the person covers a good part of each, never all of it
    fractions = [float(plain[i]["person"].mean()) for i in range(0, len(split.train), 60)]
    assert 0.3 < np.mean(fractions) < 0.85


def test_pipeline_person_saliency_is_on_the_saliency_grid():
    from dpmpp.api import Pipeline

    pipeline = Pipeline.from_checkpoint()
    split = load_split("pets09_occ", ASSETS / "pets09_occ")
    records = split.train[:6]
    grids = pipeline.person_saliency(records, PersonMasks.for_root(ASSETS / "pets09_occ"))
    assert grids.shape == pipeline.saliency([r.path for r in records]).shape
    assert grids.min() >= 0 and grids.max() <= 1 and 0.3 < grids.mean() < 0.85
    # the middle columns of a person crop are person more often than its left and right edges
    assert grids[:, :, 2:-2].mean() > grids[:, :, [0, -1]].mean()


def test_nearer_persons_are_cut_out_as_occluders(tmp_path):
    background = _scene()
    (tmp_path / "source").mkdir()
    Image.fromarray(background).save(tmp_path / "source" / "background.png")
    with pytest.raises(ValueError, match="ground truth"):
        PersonMasks.for_root(tmp_path, nearer_persons=True)
    # frame 7: track 1 (farther, bottom 90) and track 2 (nearer, bottom 110) overlapping its right half;
    # track 3 is farther still (bottom 60) and must not be cut out
    (tmp_path / "source" / "gt.txt").write_text(
        "7,1,50,30,30,60,1,-1,-1,-1\n7,2,65,40,30,70,1,-1,-1,-1\n7,3,40,20,30,40,1,-1,-1,-1\n"
    )
    frame = background.copy()
    frame[30:90, 50:80] = (250, 250, 0)  # the person of track 1
    frame[40:110, 65:95] = (0, 250, 250)  # the nearer person of track 2, in front
    meta = {"bbox_left": 50.0, "bbox_top": 30.0, "bbox_width": 30.0, "bbox_height": 60.0, "frame": 7, "track": 1}
    rows, columns = box_slice(meta, (160, 120))
    record = ReIDRecord("x.jpg", 1, 1, meta)
    plain = PersonMasks.for_root(tmp_path)(record, frame[rows, columns])
    cut = PersonMasks.for_root(tmp_path, nearer_persons=True)(record, frame[rows, columns])
    assert plain[15:, 20:].mean() > 0.95  # without the boxes, the nearer person counts as foreground
    assert not cut[10:, 15:].any()  # with them, track 2's box (x >= 65, y >= 40) is not this person
    assert cut[:8, 5:25].mean() > 0.9 and cut[15:, 3:12].mean() > 0.9  # track 1's own visible part stays
