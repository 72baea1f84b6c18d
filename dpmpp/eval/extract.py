"""Feature extraction and evaluation of a DPM++ model on a Split."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from dpmpp.data.dataset import ImageDataset
from dpmpp.data.records import ReIDRecord, Split
from dpmpp.eval.distance import cosine_similarity, masked_cosine, masked_cosine_symmetric
from dpmpp.eval.metrics import ReIDMetrics, evaluate


@torch.no_grad()
def extract(
    model, images_or_loader, device, camids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """L2-normalised prototype-space features [N, E] and masks [N, E] (None without a mask generator), on CPU.

    Accepts an iterable of batch dicts ({"image", optional "camid"}) or a single image tensor [B, 3, H, W].
    """
    model.eval()
    batches = (
        [{"image": images_or_loader, "camid": camids}]
        if isinstance(images_or_loader, torch.Tensor)
        else images_or_loader
    )
    feats, masks = [], []
    for batch in batches:
        camid = batch.get("camid")
        out = model(batch["image"].to(device), camid.to(device) if camid is not None else None, extras=False)
        feats.append(F.normalize(out.proj.float(), dim=1).cpu())
        if out.mask is not None:
            masks.append(out.mask.float().cpu())
    return torch.cat(feats), (torch.cat(masks) if masks else None)


def records_loader(records: list[ReIDRecord], transform, batch_size: int, num_workers: int = 0) -> DataLoader:
    return DataLoader(ImageDataset(records, transform), batch_size=batch_size, shuffle=False, num_workers=num_workers)


def similarity(query_feats, query_masks, gallery_feats, gallery_masks=None, use_mask=True, symmetric=False):
    """[Q, G] similarity under the chosen matching rule (masked by default when masks exist)."""
    if not use_mask or query_masks is None:
        return cosine_similarity(query_feats, gallery_feats)
    if symmetric:
        return masked_cosine_symmetric(query_feats, query_masks, gallery_feats, gallery_masks)
    return masked_cosine(query_feats, query_masks, gallery_feats)


def evaluate_similarity(split: Split, sim) -> ReIDMetrics:
    """CMC/mAP/mINP of a [Q, G] similarity matrix (numpy or tensor) over `split`'s query and gallery."""
    sim = sim.numpy() if isinstance(sim, torch.Tensor) else np.asarray(sim)
    pids = lambda records: np.array([r.pid for r in records])  # noqa: E731
    camids = lambda records: np.array([r.camid for r in records])  # noqa: E731
    return evaluate(1.0 - sim, pids(split.query), pids(split.gallery), camids(split.query), camids(split.gallery))


def evaluate_features(
    split: Split,
    query_feats,
    query_masks,
    gallery_feats,
    gallery_masks=None,
    use_mask: bool = True,
    symmetric: bool = False,
) -> ReIDMetrics:
    return evaluate_similarity(
        split, similarity(query_feats, query_masks, gallery_feats, gallery_masks, use_mask, symmetric)
    )


def top_match_pids(split, sim) -> np.ndarray:
    """[Q] identity of each query's best gallery match under the protocol (same identity and camera removed)."""
    sim = np.array(sim, dtype=float)  # a copy: the excluded entries are overwritten
    q_pids, g_pids = np.array([r.pid for r in split.query]), np.array([r.pid for r in split.gallery])
    q_cams, g_cams = np.array([r.camid for r in split.query]), np.array([r.camid for r in split.gallery])
    sim[(q_pids[:, None] == g_pids[None, :]) & (q_cams[:, None] == g_cams[None, :])] = -np.inf
    return g_pids[sim.argmax(axis=1)]
