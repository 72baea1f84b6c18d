"""P×K sampling, transforms, image loading and the colour baseline features."""

import numpy as np
import pytest
import torch
from PIL import Image

from dpmpp.data.images import ImageLoadError, load_image
from dpmpp.data.samplers import PKBatchSampler
from dpmpp.data.transforms import build_transforms
from dpmpp.eval.baselines import hsv_stripe_features

PIDS = [pid for pid in range(7) for _ in range(3 + pid)]  # identities with 3..9 images


def test_pk_batches_hold_exactly_p_identities_times_k():
    sampler = PKBatchSampler(PIDS, num_pids=4, num_instances=4, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        pids = [PIDS[i] for i in batch]
        assert len(batch) == 16
        assert sorted(set(pids)) == sorted(set(pids)) and len(set(pids)) == 4
        assert all(pids.count(p) == 4 for p in set(pids))


def test_pk_sampler_is_seeded_and_reshuffles_per_epoch():
    a, b = PKBatchSampler(PIDS, 2, 2, seed=3), PKBatchSampler(PIDS, 2, 2, seed=3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_distributed_pk_sampler_ranks_are_disjoint_and_equal():
    ranks = [PKBatchSampler(PIDS, 2, 2, seed=0, num_replicas=2, rank=r) for r in range(2)]
    batches = [list(s) for s in ranks]
    assert len(batches[0]) == len(batches[1]) > 0
    assert not {tuple(b) for b in batches[0]} & {tuple(b) for b in batches[1]}


def test_pk_sampler_refuses_too_few_identities():
    with pytest.raises(ValueError, match="identities"):
        PKBatchSampler([0, 0, 1], num_pids=3, num_instances=2)


def test_transforms_shape_and_train_randomness():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 30, 3), dtype=np.uint8))
    test = build_transforms(64, 32, train=False)
    assert test(image).shape == (3, 64, 32)
    assert torch.equal(test(image), test(image))
    train = build_transforms(64, 32, train=True)
    torch.manual_seed(0)
    outputs = [train(image) for _ in range(4)]
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:])


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16", "P"])
def test_load_image_converts_modes_to_rgb(mode):
    image = Image.new("RGB", (20, 40), (200, 30, 10)).convert(mode)
    assert load_image(image).mode == "RGB" and load_image(image).size == (20, 40)


def test_load_image_errors(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"this is text")
    with pytest.raises(ImageLoadError, match="not a readable image"):
        load_image(tmp_path / "x.jpg")
    with pytest.raises(ImageLoadError, match="at least"):
        load_image(Image.new("RGB", (1, 1)))
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image(np.full((10, 10, 3), np.nan))
    with pytest.raises(ImageLoadError, match="expected a path"):
        load_image(3.5)


def test_hsv_features_separate_colours():
    red, red2, green = (Image.new("RGB", (30, 80), c) for c in ((200, 20, 20), (205, 22, 18), (20, 200, 20)))
    feats = hsv_stripe_features([red, red2, green])
    assert feats.shape[0] == 3
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-6)
    assert feats[0] @ feats[1] > 0.99 and feats[0] @ feats[2] < 0.01
