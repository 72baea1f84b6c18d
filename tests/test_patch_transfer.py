"""Saliency-guided patch transfer really mixes, leaves the rest alone, pairs by OIoU, and repeats under a seed."""

import pytest
import torch

from dpmpp.data.patch_transfer import SaliencyPatchTransfer, occlusion_iou

PATCH = (8, 8)


def batch(seed=0, b=6):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, 64, 32, generator=g)
    saliency = torch.rand(b, 8, 4, generator=g)
    pids = torch.arange(b) // 2
    return images, saliency, pids


def make(prob, seed=0, **kwargs):
    return SaliencyPatchTransfer(prob=prob, patch_size=PATCH, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_prob_zero_is_identity():
    images, saliency, pids = batch()
    result = make(0.0)(images, saliency, pids)
    assert torch.equal(result.images, images) and not result.mixed.any()
    assert (result.partner_pid == -1).all()
    disabled = make(1.0, enabled=False)(images, saliency, pids)
    assert torch.equal(disabled.images, images)


def test_prob_one_changes_images_and_untouched_pixels_stay():
    images, saliency, pids = batch()
    result = make(1.0)(images, saliency, pids)
    assert result.mixed.all()
    for i in range(len(images)):
        j, shift = int(result.partner[i]), int(result.shift[i])
        assert j != i
        anchor = torch.roll(images[i], shift * PATCH[1], dims=-1)
        region = result.region[i]
        assert region.any() and not torch.equal(result.images[i], images[i])
        assert torch.equal(result.images[i][:, ~region], anchor[:, ~region])  # the anchor's own pixels
        assert torch.equal(result.images[i][:, region], images[j][:, region])  # the partner's pixels
        # the region is exactly where the partner's binarised saliency says "not person", at patch granularity
        expected = (saliency[j] <= 0.5).repeat_interleave(8, 0).repeat_interleave(8, 1)
        assert torch.equal(region, expected)


def test_partner_identity_is_recorded_for_class_ignoring():
    images, saliency, pids = batch()
    result = make(1.0)(images, saliency, pids)
    for i in range(len(images)):
        partner_pid = int(pids[int(result.partner[i])])
        expected = partner_pid if partner_pid != int(pids[i]) else -1
        assert int(result.partner_pid[i]) == expected


def test_fixed_seed_repeats_exactly_and_other_seeds_differ():
    images, saliency, pids = batch()
    a, b = make(0.5, seed=3)(images, saliency, pids), make(0.5, seed=3)(images, saliency, pids)
    assert torch.equal(a.images, b.images) and torch.equal(a.partner, b.partner)
    results = [make(0.5, seed=s)(images, saliency, pids).mixed for s in range(8)]
    assert any(not torch.equal(results[0], r) for r in results[1:])


def test_oiou_matches_loop_and_pairing_picks_high_overlap():
    masks = torch.rand(5, 6, 4, generator=torch.Generator().manual_seed(1)) > 0.5
    scores = occlusion_iou(masks)
    for i in range(5):
        for r in range(4):
            for j in range(5):
                rolled = torch.roll(masks[i], r, dims=1)
                expected = (rolled & masks[j]).sum() / masks[j].sum().clamp_min(1)
                assert torch.isclose(scores[i, r, j], expected.float())
    # Anchor 0 has a person in column 0; partner 1 has it in column 2: the best shift is 2.
    m = torch.zeros(3, 4, 4, dtype=torch.bool)
    m[0, :, 0] = True
    m[1, :, 2] = True
    m[2, 0, 3] = True
    transfer = make(1.0, top_fraction=0.01, min_oiou=0.7)
    partner, shift, oiou = transfer._choose(m, 3, 4)
    assert (int(partner[0]), int(shift[0]), float(oiou[0])) in {(1, 2, 1.0), (2, 3, 1.0)}


def test_random_pairing_when_occlusion_pairing_is_off():
    images, saliency, pids = batch()
    result = make(1.0, pairing=False)(images, saliency, pids)
    assert result.mixed.all() and (result.shift == 0).all() and (result.partner != torch.arange(6)).all()


def test_max_shift_bounds_the_anchor_shift():
    images, saliency, pids = batch(b=8)
    free = make(1.0)(images, saliency, pids)
    assert (free.shift != 0).any()  # with any shift allowed, random masks pick some
    for max_shift in (0, 1):
        result = make(1.0, max_shift=max_shift)(images, saliency, pids)
        distance = torch.minimum(result.shift, 4 - result.shift)  # 4 patch columns, circular
        assert result.mixed.all() and (distance <= max_shift).all()
    unshifted = make(1.0, max_shift=0)(images, saliency, pids)
    masks = saliency > 0.5
    for i in range(len(images)):  # the recorded overlap is that of the unshifted pair
        j = int(unshifted.partner[i])
        assert unshifted.oiou[i] == occlusion_iou(masks)[i, 0, j] and j != i


def test_anchor_person_region_keeps_the_anchors_background_and_occluders():
    images, saliency, pids = batch(b=8)
    masks = saliency > 0.5
    spt = make(1.0)(images, saliency, pids)
    kept = make(1.0, region="anchor_person")(images, saliency, pids)
    assert torch.equal(kept.partner, spt.partner) and torch.equal(kept.shift, spt.shift)  # same pairs
    for i in range(len(images)):
        j, shift = int(kept.partner[i]), int(kept.shift[i])
        anchor_person = torch.roll(masks[i], shift, dims=1)
        expected = anchor_person & ~masks[j]  # the anchor's body where the partner's person is not
        patches = kept.region[i][:: PATCH[0], :: PATCH[1]]
        assert torch.equal(patches, expected)
        assert not (patches & ~spt.region[i][:: PATCH[0], :: PATCH[1]]).any()  # a subset of SPT's region
        rolled = torch.roll(images[i], shift * PATCH[1], dims=-1)
        outside = ~kept.region[i]
        assert torch.equal(kept.images[i][:, outside], rolled[:, outside])  # background and occluders stay
    with pytest.raises(ValueError, match="transfer region"):
        make(1.0, region="everything")


def test_best_partner_is_the_top_allowed_pair_and_honours_overrides():
    """The single-anchor choice the facade's `transfer` uses: the same oIoU and max-shift rule as training."""
    _, saliency, _ = batch(b=7)
    masks = saliency > 0.5
    scores = occlusion_iou(masks)[0, :, 1:]  # [4 shifts, 6 candidates]
    partner, shift, oiou = make(1.0).best_partner(masks)
    assert oiou == pytest.approx(float(scores.max())) and scores[shift, partner] == scores.max()
    partner, shift, oiou = make(1.0, max_shift=0).best_partner(masks)
    assert shift == 0 and oiou == pytest.approx(float(scores[0].max()))
    partner, shift, oiou = make(1.0, max_shift=0).best_partner(masks, partner=2, shift=3)  # overrides win
    assert (partner, shift) == (2, 3) and oiou == pytest.approx(float(scores[3, 2]))
    partner, shift, _ = make(1.0).best_partner(masks, partner=4)
    assert partner == 4 and scores[shift, 4] == scores[:, 4].max()
    with pytest.raises(IndexError):
        make(1.0).best_partner(masks, partner=6)


def test_mix_pair_takes_the_partners_occluding_patches_and_rolls_the_rest():
    images, saliency, _ = batch(b=2)
    masks = saliency > 0.5
    mixed, region = make(1.0).mix_pair(images, masks, shift=1)
    assert region.shape == (64, 32) and region.any() and (~region).any()
    assert torch.equal(mixed[:, region], images[1][:, region])
    rolled = torch.roll(images[0], 8, dims=2)  # one patch column
    assert torch.equal(mixed[:, ~region], rolled[:, ~region])


def test_top_share_binarisation_finds_a_person_in_a_map_that_never_reaches_the_threshold():
    saliency = torch.linspace(0.1, 0.45, 16 * 8).reshape(1, 16, 8).repeat(2, 1, 1)
    saliency[1] = saliency[1].flip(0)  # the other map's highest patches are at its top
    assert not SaliencyPatchTransfer(threshold=0.5).binarise(saliency).any()
    masks = SaliencyPatchTransfer(threshold=0.5, top=0.3).binarise(saliency)
    assert masks.flatten(1).sum(1).tolist() == [38, 38]  # round(0.3 * 128) patches each
    assert masks[0, -1].all() and not masks[0, 0].any() and masks[1, 0].all() and not masks[1, -1].any()
