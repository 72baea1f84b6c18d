"""Exact re-ID metrics (CMC, mAP, mINP) under the standard single-query protocol.

For each query, gallery items with the same pid *and* the same camid are removed (the same person seen by the
same camera is not re-identification); queries left with no true match are skipped and counted. Ties in the
distance matrix are broken by gallery order (stable sort), which the loop reference in the tests repeats.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ReIDMetrics:
    cmc: np.ndarray  # [max_rank] fraction of valid queries whose first true match is within rank k+1
    mAP: float
    mINP: float
    num_query: int  # queries given
    num_valid_query: int  # queries with at least one true match left after the same-camera filter
    num_gallery: int
    ap: np.ndarray  # [num_query] per-query AP, NaN for skipped queries
    first_true_rank: np.ndarray  # [num_query] 1-based rank of the first true match, 0 for skipped queries

    @property
    def rank1(self) -> float:
        return float(self.cmc[0])

    @property
    def rank5(self) -> float:
        return float(self.cmc[min(4, len(self.cmc) - 1)])

    @property
    def rank10(self) -> float:
        return float(self.cmc[min(9, len(self.cmc) - 1)])

    def summary(self) -> dict[str, float | int]:
        """The flat record printed by `eval --json` (percentages as fractions in [0, 1])."""
        return {
            "rank1": self.rank1,
            "rank5": self.rank5,
            "rank10": self.rank10,
            "mAP": self.mAP,
            "mINP": self.mINP,
            "num_query": self.num_query,
            "num_valid_query": self.num_valid_query,
            "num_gallery": self.num_gallery,
        }

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("cmc", "ap", "first_true_rank"):
            out[key] = out[key].tolist()
        return out


def evaluate(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    chunk_size: int = 1024,
) -> ReIDMetrics:
    """CMC, mAP and mINP of a [Q, G] distance matrix (smaller = more similar).

    Vectorised over queries; `chunk_size` bounds the [chunk, G] working arrays for large galleries.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    num_query, num_gallery = distmat.shape
    if q_pids.shape != (num_query,) or q_camids.shape != (num_query,):
        raise ValueError(
            f"distmat has {num_query} queries but q_pids/q_camids have shapes {q_pids.shape}/{q_camids.shape}"
        )
    if g_pids.shape != (num_gallery,) or g_camids.shape != (num_gallery,):
        raise ValueError(
            f"distmat has {num_gallery} gallery items but g_pids/g_camids have shapes {g_pids.shape}/{g_camids.shape}"
        )
    if np.isnan(distmat).any():
        raise ValueError("distmat contains NaN; features or masks are broken upstream")
    max_rank = min(max_rank, num_gallery)

    ap = np.full(num_query, np.nan)
    inp = np.full(num_query, np.nan)
    first_rank = np.zeros(num_query, dtype=np.int64)
    for start in range(0, num_query, chunk_size):  # a loop over blocks of queries, not over queries
        stop = min(start + chunk_size, num_query)
        _evaluate_block(
            distmat[start:stop],
            q_pids[start:stop],
            g_pids,
            q_camids[start:stop],
            g_camids,
            ap[start:stop],
            inp[start:stop],
            first_rank[start:stop],
        )

    valid = first_rank > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a true match in the gallery (after removing same-pid same-camera items)")
    ranks = np.arange(1, max_rank + 1)
    cmc = (first_rank[valid, None] <= ranks[None, :]).mean(axis=0)
    return ReIDMetrics(
        cmc=cmc,
        mAP=float(np.nanmean(ap)),
        mINP=float(np.nanmean(inp)),
        num_query=num_query,
        num_valid_query=num_valid,
        num_gallery=num_gallery,
        ap=ap,
        first_true_rank=first_rank,
    )


def _evaluate_block(distmat, q_pids, g_pids, q_camids, g_camids, ap_out, inp_out, first_rank_out) -> None:
    order = np.argsort(distmat, axis=1, kind="stable")  # [Q, G]
    same_pid = g_pids[order] == q_pids[:, None]
    keep = ~(same_pid & (g_camids[order] == q_camids[:, None]))
    hits = same_pid & keep  # true matches, in ranked order, among kept items
    position = np.cumsum(keep, axis=1)  # 1-based rank of each kept item once removed items are skipped
    num_hits = hits.sum(axis=1)
    valid = num_hits > 0
    hit_count = np.cumsum(hits, axis=1)
    precision_at_hits = np.where(hits, hit_count / np.maximum(position, 1), 0.0)
    ap_out[valid] = precision_at_hits.sum(axis=1)[valid] / num_hits[valid]
    first = np.argmax(hits, axis=1)
    last = hits.shape[1] - 1 - np.argmax(hits[:, ::-1], axis=1)
    rows = np.arange(len(distmat))
    first_rank_out[valid] = position[rows, first][valid]
    inp_out[valid] = num_hits[valid] / position[rows, last][valid]
