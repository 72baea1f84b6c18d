"""Distances for retrieval: plain cosine and DPM's query-adaptive masked cosine (docs/method.md §5)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_EPS = 1e-12


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def cosine_similarity(query_feats, gallery_feats):
    """[Q, D] x [G, D] -> [Q, G] cosine similarity; numpy in, numpy out; tensor in, tensor out."""
    q, g = _as_tensor(query_feats).float(), _as_tensor(gallery_feats).float()
    sim = F.normalize(q, dim=1) @ F.normalize(g, dim=1).T
    return sim if isinstance(query_feats, torch.Tensor) else sim.numpy()


def masked_cosine(query_feats, query_masks, gallery_feats, gallery_chunk: int = 65536):
    """Query-adaptive masked cosine `s(q, g) = <q̂, normalize(m_q ⊙ ĝ)>`.

    query_feats [Q, D], query_masks [Q, D] (values >= 0), gallery_feats [G, D] -> [Q, G].
    Computed as `(q̂ ⊙ m_q) · Ĝᵀ / sqrt((m_q ⊙ m_q) · (Ĝ ⊙ Ĝ)ᵀ)`: two matrix products, no loop over
    queries; the gallery is processed in chunks so that float16/memory-mapped galleries stay bounded.
    """
    as_numpy = not isinstance(query_feats, torch.Tensor)
    q = F.normalize(_as_tensor(query_feats).float(), dim=1)
    m = _as_tensor(query_masks).to(q)
    if m.shape != q.shape:
        raise ValueError(f"query_masks {tuple(m.shape)} must match query_feats {tuple(q.shape)}")
    g_all = _as_tensor(gallery_feats)
    numerator_q, mask_sq = q * m, m * m
    out = torch.empty(q.shape[0], g_all.shape[0], dtype=q.dtype, device=q.device)
    for start in range(0, g_all.shape[0], gallery_chunk):  # chunks of gallery, not a loop over items
        g = F.normalize(g_all[start : start + gallery_chunk].to(q), dim=1)
        numerator = numerator_q @ g.T
        denominator = (mask_sq @ (g * g).T).clamp_min(_EPS).sqrt()
        out[:, start : start + g.shape[0]] = numerator / denominator
    return out.numpy() if as_numpy else out


class MaskedGallery:
    """A gallery prepared once for query-adaptive masked search: unit features Ĝ and their squares Ĝ ⊙ Ĝ.

    Scoring is then exactly two matrix products per query block, `(q̂ ⊙ m) Ĝᵀ` and `(m ⊙ m)(Ĝ ⊙ Ĝ)ᵀ`,
    against one for plain cosine: the floor for exact masked search. `dtype` may be float16 to halve memory.
    """

    def __init__(self, gallery_feats, dtype: torch.dtype = torch.float32) -> None:
        g = F.normalize(_as_tensor(gallery_feats).float(), dim=1)
        self.feats, self.squared = g.to(dtype), g.square().to(dtype)

    def __len__(self) -> int:
        return self.feats.shape[0]

    def scores(self, query_feats: torch.Tensor, query_masks: torch.Tensor) -> torch.Tensor:
        """[Q, D], [Q, D] -> [Q, G] masked cosine."""
        q = F.normalize(query_feats.float(), dim=1).to(self.feats)
        m = query_masks.to(self.feats)
        numerator = (q * m) @ self.feats.T
        denominator = ((m * m) @ self.squared.T).float().clamp_min(_EPS).sqrt()
        return numerator.float() / denominator


def masked_cosine_symmetric(query_feats, query_masks, gallery_feats, gallery_masks):
    """Ablation: cosine of `q̂ ⊙ m` and `ĝ ⊙ m` with the shared mask `m = m_q ⊙ m_g`. [Q, G]."""
    as_numpy = not isinstance(query_feats, torch.Tensor)
    q = F.normalize(_as_tensor(query_feats).float(), dim=1)
    g = F.normalize(_as_tensor(gallery_feats).float(), dim=1)
    mq2, mg2 = _as_tensor(query_masks).to(q).square(), _as_tensor(gallery_masks).to(q).square()
    numerator = (q * mq2) @ (g * mg2).T
    q_norm = ((q * q * mq2) @ mg2.T).clamp_min(_EPS).sqrt()
    g_norm = (mq2 @ (g * g * mg2).T).clamp_min(_EPS).sqrt()
    out = numerator / (q_norm * g_norm)
    return out.numpy() if as_numpy else out
