"""Large galleries: approximate candidates from an unmasked index built once, then exact masked re-scoring.

The masked score depends on the query's mask, so no single prebuilt index answers it exactly. An inverted-file
index (faiss IVF, inner product on unit features) proposes `candidates` items per query; the exact masked cosine
of docs/method.md §5 then re-ranks them. Gallery features can live in a float16 memory-mapped file, read in chunks,
so 10^6 × 512 features take 1 GB on disk and little RAM.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def write_memmap(path: str | Path, feats: np.ndarray, chunk: int = 65536) -> np.memmap:
    """Store [G, D] features L2-normalised as float16 at `path`; returns the read-only memmap."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=feats.shape)
    for start in range(0, len(feats), chunk):
        block = np.asarray(feats[start : start + chunk], dtype=np.float32)
        out[start : start + chunk] = block / np.linalg.norm(block, axis=1, keepdims=True).clip(1e-12)
    out.flush()
    return np.load(path, mmap_mode="r")


class ApproximateMaskedIndex:
    """IVF candidates (unmasked inner product) + exact masked re-scoring of the candidates."""

    def __init__(
        self,
        gallery: np.ndarray,
        nlist: int | None = None,
        nprobe: int = 64,
        train_size: int = 100_000,
        chunk: int = 65536,
        seed: int = 0,
    ) -> None:
        import faiss

        self.gallery = gallery  # [G, D] unit features, float16/float32, in memory or memory-mapped
        count, dim = gallery.shape
        # faiss wants about 39 training points per list; 4·sqrt(G) lists is the usual starting point.
        self.nlist = nlist or max(1, min(4096, int(4 * np.sqrt(count)), min(train_size, count) // 39))
        quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(count, size=min(train_size, count), replace=False))
        self.index.train(np.ascontiguousarray(gallery[sample], dtype=np.float32))
        for start in range(0, count, chunk):
            self.index.add(np.ascontiguousarray(gallery[start : start + chunk], dtype=np.float32))
        self.index.nprobe = nprobe
        self._keep = quantizer  # the IVF index does not own its quantizer in the Python bindings

    def search(
        self, query_feats: np.ndarray, query_masks: np.ndarray, top_k: int = 10, candidates: int = 256
    ) -> tuple[np.ndarray, np.ndarray]:
        """[Q, D] features and masks -> (indices [Q, k], masked scores [Q, k]), best first."""
        q = np.asarray(query_feats, dtype=np.float32)
        q = q / np.linalg.norm(q, axis=1, keepdims=True).clip(1e-12)
        m = np.asarray(query_masks, dtype=np.float32)
        _, ids = self.index.search(q, candidates)  # [Q, C], -1 where the probed lists hold fewer
        valid = ids >= 0
        safe = np.where(valid, ids, 0)
        order = np.argsort(safe, axis=1)  # sorted reads are kinder to a memory-mapped file
        rows = np.take_along_axis(safe, order, axis=1)
        g = np.asarray(self.gallery[rows.ravel()], dtype=np.float32).reshape(*rows.shape, -1)  # [Q, C, D]
        numerator = np.einsum("qd,qcd->qc", q * m, g)
        denominator = np.sqrt(np.einsum("qd,qcd->qc", m * m, g * g).clip(1e-12))
        scores = np.where(np.take_along_axis(valid, order, axis=1), numerator / denominator, -np.inf)
        best = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        return np.take_along_axis(rows, best, axis=1), np.take_along_axis(scores, best, axis=1)
