"""Vectorised metrics and distances against slow loop references on seeded random data."""

import numpy as np
import pytest
import torch

from dpmpp.eval.distance import cosine_similarity, masked_cosine, masked_cosine_symmetric
from dpmpp.eval.metrics import evaluate


def loop_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """Textbook per-query evaluation (the torchreid loop), with a stable sort for ties."""
    cmc_all, aps, inps, skipped = [], [], [], 0
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        matches = (g_pids[order] == q_pids[i])[keep].astype(int)
        if matches.sum() == 0:
            skipped += 1
            continue
        cmc = matches.cumsum()
        cmc[cmc > 1] = 1
        cmc_all.append(cmc[:max_rank])
        hits = np.where(matches == 1)[0]
        inps.append(matches.sum() / (hits[-1] + 1))
        precision = [(k + 1) / (pos + 1) for k, pos in enumerate(hits)]
        aps.append(np.mean(precision))
    return np.mean(cmc_all, axis=0), np.mean(aps), np.mean(inps), skipped


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("with_ties", [False, True])
def test_evaluate_matches_loop_reference(seed, with_ties):
    rng = np.random.default_rng(seed)
    num_query, num_gallery = 37, 120
    q_pids, g_pids = rng.integers(0, 12, num_query), rng.integers(0, 12, num_gallery)
    q_pids[0] = 99  # an identity absent from the gallery: must be skipped and counted
    q_camids, g_camids = rng.integers(0, 3, num_query), rng.integers(0, 3, num_gallery)
    distmat = rng.random((num_query, num_gallery))
    if with_ties:
        distmat = np.round(distmat * 4) / 4  # many exact ties
    metrics = evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20)
    cmc, mean_ap, mean_inp, skipped = loop_reference(distmat, q_pids, g_pids, q_camids, g_camids, 20)
    assert metrics.num_valid_query == num_query - skipped
    assert skipped >= 1
    np.testing.assert_allclose(metrics.cmc, cmc, atol=1e-12)
    assert metrics.mAP == pytest.approx(mean_ap, abs=1e-12)
    assert metrics.mINP == pytest.approx(mean_inp, abs=1e-12)
    assert np.isnan(metrics.ap[0]) and metrics.first_true_rank[0] == 0


def test_evaluate_chunking_does_not_change_results():
    rng = np.random.default_rng(7)
    distmat = rng.random((50, 80))
    args = (rng.integers(0, 5, 50), rng.integers(0, 5, 80), rng.integers(0, 2, 50), rng.integers(0, 2, 80))
    whole, chunked = evaluate(distmat, *args), evaluate(distmat, *args, chunk_size=7)
    np.testing.assert_array_equal(whole.cmc, chunked.cmc)
    np.testing.assert_array_equal(whole.ap, chunked.ap)


def test_same_camera_true_match_is_not_counted():
    # The only same-pid gallery item shares the query's camera: the query has no valid match.
    distmat = np.array([[0.1, 0.5], [0.3, 0.2]])
    metrics = evaluate(distmat, np.array([1, 2]), np.array([1, 2]), np.array([0, 0]), np.array([0, 1]))
    assert metrics.num_valid_query == 1
    assert metrics.first_true_rank.tolist() == [0, 1]
    assert metrics.rank1 == 1.0


def test_known_ranking():
    # query pid 1, cam 0; gallery ranked: [pid 2, pid 1 (cam 1), pid 1 (cam 0: removed), pid 1 (cam 2)]
    distmat = np.array([[0.1, 0.2, 0.3, 0.4]])
    metrics = evaluate(distmat, np.array([1]), np.array([2, 1, 1, 1]), np.array([0]), np.array([1, 1, 0, 2]))
    assert metrics.first_true_rank[0] == 2
    assert metrics.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert metrics.mINP == pytest.approx(2 / 3)
    assert metrics.cmc[:3].tolist() == [0.0, 1.0, 1.0]


def test_evaluate_rejects_nan_and_shape_mismatch():
    with pytest.raises(ValueError, match="NaN"):
        evaluate(np.array([[np.nan]]), np.array([1]), np.array([1]), np.array([0]), np.array([1]))
    with pytest.raises(ValueError, match="gallery"):
        evaluate(np.zeros((1, 2)), np.array([1]), np.array([1]), np.array([0]), np.array([1]))


def masked_cosine_loop(query, masks, gallery):
    out = np.zeros((len(query), len(gallery)))
    for i, (q, m) in enumerate(zip(query, masks)):
        q = q / np.linalg.norm(q)
        for j, g in enumerate(gallery):
            g = g / np.linalg.norm(g)
            gated = m * g
            out[i, j] = q @ (gated / np.linalg.norm(gated))
    return out


@pytest.mark.parametrize("num_query", [1, 9])
def test_masked_cosine_matches_loop(num_query):
    rng = np.random.default_rng(num_query)
    query, gallery = rng.normal(size=(num_query, 16)), rng.normal(size=(30, 16))
    masks = rng.random((num_query, 16))
    expected = masked_cosine_loop(query, masks, gallery)
    np.testing.assert_allclose(masked_cosine(query, masks, gallery), expected, atol=1e-5)
    np.testing.assert_allclose(masked_cosine(query, masks, gallery, gallery_chunk=7), expected, atol=1e-5)
    as_tensor = masked_cosine(torch.from_numpy(query), torch.from_numpy(masks), torch.from_numpy(gallery))
    assert isinstance(as_tensor, torch.Tensor)


def test_masked_cosine_with_unit_mask_is_cosine_and_scales_with_thousands_of_queries():
    rng = np.random.default_rng(0)
    query, gallery = rng.normal(size=(3000, 32)).astype(np.float32), rng.normal(size=(200, 32)).astype(np.float32)
    ones = np.ones_like(query)
    np.testing.assert_allclose(masked_cosine(query, ones, gallery), cosine_similarity(query, gallery), atol=1e-5)
    # A mask that keeps one dimension scores sign agreement on that dimension only.
    one_dim = np.zeros_like(query[:1])
    one_dim[0, 3] = 1
    scores = masked_cosine(query[:1], one_dim, gallery)[0]
    q_hat = query[0] / np.linalg.norm(query[0])
    np.testing.assert_allclose(scores, q_hat[3] * np.sign(gallery[:, 3]), atol=1e-5)


def test_symmetric_masked_cosine_matches_loop():
    rng = np.random.default_rng(3)
    query, gallery = rng.normal(size=(4, 8)), rng.normal(size=(6, 8))
    mq, mg = rng.random((4, 8)), rng.random((6, 8))
    expected = np.zeros((4, 6))
    for i in range(4):
        for j in range(6):
            m = mq[i] * mg[j]
            a, b = query[i] / np.linalg.norm(query[i]) * m, gallery[j] / np.linalg.norm(gallery[j]) * m
            expected[i, j] = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    np.testing.assert_allclose(masked_cosine_symmetric(query, mq, gallery, mg), expected, atol=1e-5)


def test_prepared_masked_gallery_matches_masked_cosine():
    from dpmpp.eval.distance import MaskedGallery

    rng = np.random.default_rng(5)
    query, gallery, masks = rng.normal(size=(7, 16)), rng.normal(size=(40, 16)), rng.random((7, 16))
    expected = masked_cosine_loop(query, masks, gallery)
    prepared = MaskedGallery(gallery)
    got = prepared.scores(torch.from_numpy(query), torch.from_numpy(masks)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    half = MaskedGallery(gallery, dtype=torch.float16).scores(torch.from_numpy(query), torch.from_numpy(masks))
    np.testing.assert_allclose(half.numpy(), expected, atol=2e-2)
