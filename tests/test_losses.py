"""Losses: class-ignoring, ArcFace margin, triplet pair masks."""

import math

import torch

from dpmpp.losses.classification import arcface_logits, smoothed_cross_entropy
from dpmpp.losses.metric import batch_hard_triplet, pair_masks
from dpmpp.losses.regularisers import head_orthogonality


def test_class_ignoring_removes_the_partner_logit():
    labels = torch.tensor([0])
    logits = torch.tensor([[1.0, 5.0, 0.0]])
    plain = smoothed_cross_entropy(logits, labels, 0.1)
    ignored = smoothed_cross_entropy(logits, labels, 0.1, ignore=torch.tensor([1]))
    assert ignored < plain
    # With the partner ignored, its logit has no influence at all.
    other = smoothed_cross_entropy(torch.tensor([[1.0, -50.0, 0.0]]), labels, 0.1, ignore=torch.tensor([1]))
    assert torch.isclose(ignored, other)
    assert torch.isfinite(ignored)


def test_arcface_penalises_only_the_target():
    cosine = torch.tensor([[0.8, 0.3]])
    logits = arcface_logits(cosine, torch.tensor([0]), scale=10.0, margin=0.3)
    assert math.isclose(float(logits[0, 0]), 10 * math.cos(math.acos(0.8) + 0.3), rel_tol=1e-5)
    assert math.isclose(float(logits[0, 1]), 3.0, rel_tol=1e-6)


def test_pair_masks_class_ignoring_and_holistic_positives():
    labels = torch.tensor([0, 0, 1, 1])
    mixed = torch.tensor([True, True, False, False])
    partner = torch.tensor([1, -1, -1, -1])  # sample 0 contains pixels of identity 1
    positives, negatives = pair_masks(labels, mixed, partner, holistic_positives=True)
    assert not negatives[0, 2] and not negatives[0, 3]  # identity 1 is not a negative for anchor 0
    assert not negatives[2, 0]  # and anchor 2 (identity 1) does not use the image that contains it
    assert negatives[1, 2]
    assert not positives[0, 1]  # two mixed images are not a positive pair
    assert not positives.diagonal().any()


def test_batch_hard_triplet_is_zero_when_separated_and_positive_otherwise():
    feats = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.1, 0.0]])
    positives, negatives = pair_masks(torch.tensor([0, 0, 1, 1]))
    assert batch_hard_triplet(feats, positives, negatives, 0.3) == 0
    swapped = feats[[0, 2, 1, 3]]
    assert batch_hard_triplet(swapped, positives, negatives, 0.3) > 1
    assert batch_hard_triplet(swapped, positives, negatives, None) > 0


def test_head_orthogonality_is_zero_for_orthogonal_heads():
    attention = torch.eye(3).unsqueeze(0)  # three heads on three disjoint patches
    assert float(head_orthogonality(attention)) < 1e-6
    assert float(head_orthogonality(torch.ones(1, 3, 4))) > 0.5


def test_masked_pair_loss_matches_a_loop_and_trains_the_mask():
    from dpmpp.losses.metric import masked_pair_loss

    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    feats = torch.randn(6, 8)
    masks = torch.rand(6, 8, requires_grad=True)
    positives, negatives = pair_masks(labels)
    loss = masked_pair_loss(feats, masks, positives, negatives, scale=10.0, margin=0.2)

    def masked_cos(i, j):  # the test-time metric: i's mask gates j
        f, g, m = feats[i] / feats[i].norm(), feats[j] / feats[j].norm(), masks[i].detach()
        return float((f * m * g).sum() / (m * g).norm())

    reference = []
    for i in range(6):
        terms = [
            math.exp(10.0 * (masked_cos(i, n) - masked_cos(i, p) + 0.2))
            for p in range(6)
            if positives[i, p]
            for n in range(6)
            if negatives[i, n]
        ]
        reference.append(math.log1p(sum(terms)))
    assert math.isclose(loss.item(), sum(reference) / 6, rel_tol=1e-5)
    loss.backward()
    assert masks.grad is not None and float(masks.grad.abs().sum()) > 0


def test_masked_pair_loss_is_near_zero_when_identities_are_apart():
    from dpmpp.losses.metric import masked_pair_loss

    labels = torch.tensor([0, 0, 1, 1])
    feats = torch.zeros(4, 4)
    feats[:2, 0], feats[2:, 1] = 1.0, 1.0
    positives, negatives = pair_masks(labels)
    assert float(masked_pair_loss(feats, torch.full((4, 4), 0.5), positives, negatives)) < 1e-6
