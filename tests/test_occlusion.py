"""Occluding a query: pasting from the real occluder bank, painting, and saliency-guided transfer via the API."""

import numpy as np
import pytest
from PIL import Image

from dpmpp.api import Pipeline
from dpmpp.config import load_preset
from dpmpp.data.occluders import PasteParams, load_bank, paint, paste
from dpmpp.data.patch_transfer import occlusion_iou
from dpmpp.engine.checkpoint import save_model
from dpmpp.model.dpmpp import build_model
from dpmpp.paths import ASSETS

BANK = ASSETS / "pets09_occ" / "occluders"
QUERY = sorted((ASSETS / "pets09_occ" / "crops" / "query").iterdir())[0]
GALLERY = sorted((ASSETS / "pets09_occ" / "crops" / "gallery").iterdir())


def test_bank_holds_real_scene_occluders():
    bank = {o.name: o for o in load_bank(BANK)}
    assert {"pole", "sign"} <= set(bank) and sum(o.kind == "person" for o in bank.values()) >= 7
    pole = np.asarray(Image.open(bank["pole"].path))
    assert pole.shape[2] == 4 and (pole[..., 3] == 0).any() and (pole[..., 3] == 255).any()
    with pytest.raises(FileNotFoundError, match="bank"):
        load_bank(ASSETS)


def test_paste_changes_only_the_covered_pixels():
    base = Image.open(QUERY).convert("RGB").resize((64, 128))
    sign = next(o for o in load_bank(BANK) if o.name == "sign")
    result = paste(base, sign.path, PasteParams("sign", x=0.5, y=0.4, scale=0.25))
    before, after = np.asarray(base), np.asarray(result.image)
    assert 0.05 < result.occluded_fraction < 0.5
    np.testing.assert_array_equal(before[~result.mask], after[~result.mask])
    assert (before[result.mask] != after[result.mask]).any()
    rows = np.flatnonzero(result.mask.any(1))
    assert abs(rows.mean() - 0.4 * 128) <= 2 and abs(len(rows) - 32) <= 1


def test_paint_fills_the_mask_and_checks_its_shape():
    base = Image.open(QUERY).convert("RGB")
    mask = np.zeros((base.height, base.width), bool)
    mask[: base.height // 2] = True
    result = paint(base, mask, "grey")
    assert (np.asarray(result.image)[mask] == 128).all()
    np.testing.assert_array_equal(np.asarray(result.image)[~mask], np.asarray(base)[~mask])
    assert result.occluded_fraction == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="mask is"):
        paint(base, mask[:-3], "grey")
    with pytest.raises(ValueError, match="unknown fill"):
        paint(base, mask, "plaid")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("random_model")
    config = load_preset("tiny")
    model, _ = build_model(config.model, (128, 64), num_classes=3, num_cameras=1, with_text=False)
    model.saliency_head.conv.bias.data.fill_(0.0)
    meta = {"num_classes": 3, "num_cameras": 1, "image_size": [128, 64], "dataset": "test", "pids": [1, 2, 3]}
    save_model(folder, model, config, meta)
    return Pipeline.from_checkpoint(folder, device="cpu")


def test_api_transfer_picks_the_best_pair_and_mixes_real_pixels(pipeline):
    candidates = GALLERY[:6]
    view = pipeline.transfer(QUERY, candidates)
    assert view.image.shape == view.anchor.shape == (128, 64, 3)
    saliency = pipeline.saliency([QUERY, *candidates])
    np.testing.assert_allclose(saliency[0], view.anchor_saliency, atol=1e-6)
    masks = saliency > pipeline.config.aug.saliency_threshold
    import torch

    scores = occlusion_iou(torch.from_numpy(masks))[0, :, 1:]
    assert view.oiou == pytest.approx(float(scores.max()))
    region = view.region
    np.testing.assert_array_equal(view.image[region], view.partner[region])
    rolled = np.roll(view.anchor, view.shift * 8, axis=1)
    np.testing.assert_array_equal(view.image[~region], rolled[~region])
    expected_region = (~view.partner_mask).repeat(8, 0).repeat(8, 1)  # tiny: 8-pixel patches
    np.testing.assert_array_equal(region, expected_region)
    forced = pipeline.transfer(QUERY, candidates, partner_index=3)
    assert forced.partner_index == 3
    with pytest.raises(IndexError):
        pipeline.transfer(QUERY, candidates, partner_index=9)
    embedded = pipeline.embed([view.image])
    assert embedded.features.shape == (1, 256)


def test_explain_gives_a_gradcam_toward_the_prototype(pipeline):
    explanation = pipeline.explain(QUERY)
    assert explanation.heatmap.shape == (128, 64) and explanation.image.shape == (128, 64, 3)
    assert 0 <= explanation.heatmap.min() and explanation.heatmap.max() <= 1 and explanation.heatmap.std() > 0
    assert explanation.pid in (1, 2, 3)
    toward = pipeline.explain(QUERY, pid=2)
    assert toward.pid == 2 and toward.class_index == 1
    with pytest.raises(ValueError, match="no prototype"):
        pipeline.explain(QUERY, pid=99)
