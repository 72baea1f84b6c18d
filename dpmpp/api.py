"""The facade the app and scripts use. Returns plain dataclasses and numpy arrays, never UI types."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dpmpp.data.images import load_image
from dpmpp.data.records import ReIDRecord, Split
from dpmpp.data.transforms import build_transforms
from dpmpp.engine import checkpoint
from dpmpp.engine.distributed import pick_device
from dpmpp.eval.extract import evaluate_similarity, similarity
from dpmpp.eval.metrics import ReIDMetrics
from dpmpp.model.dpmpp import build_model
from dpmpp.paths import DEFAULT_CHECKPOINT

logger = logging.getLogger(__name__)


@dataclass
class Embedding:
    features: np.ndarray  # [N, E] L2-normalised prototype-space features
    masks: np.ndarray | None  # [N, E] dynamic prototype masks in (0, 1); None for a model without a mask


@dataclass
class SearchResult:
    indices: np.ndarray  # [Q, k] gallery indices, best first
    scores: np.ndarray  # [Q, k] similarities (masked cosine when use_mask)


class Pipeline:
    """A loaded DPM++ checkpoint with its preprocessing."""

    def __init__(self, model, config, meta: dict, folder: Path | None, device: torch.device) -> None:
        self.model, self.config, self.meta, self.folder, self.device = model.eval(), config, meta, folder, device
        self.image_size = tuple(meta["image_size"])
        self.transform = build_transforms(*self.image_size, train=False)

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, device: str | None = None) -> "Pipeline":
        folder = Path(path) if path is not None else DEFAULT_CHECKPOINT
        config, meta = checkpoint.read_config(folder)
        resolved = pick_device(device)
        try:
            model, _ = build_model(
                config.model,
                tuple(meta["image_size"]),
                int(meta["num_classes"]),
                int(meta.get("num_cameras", 0)),
                with_text=False,
                load_pretrained=False,
            )
        except (KeyError, ValueError, RuntimeError) as error:
            raise checkpoint.CheckpointError(
                f"{folder}: config.json does not describe a buildable model ({error})"
            ) from error
        checkpoint.load_weights(folder, model)
        return cls(model.to(resolved), config, meta, folder, resolved)

    @property
    def has_mask(self) -> bool:
        return self.model.mask_generator is not None

    def preprocess(self, images: Sequence) -> torch.Tensor:
        """Paths, PIL images or arrays -> normalised batch [N, 3, H, W]."""
        return torch.stack([self.transform(load_image(image)) for image in images])

    @torch.no_grad()
    def embed(self, images: Sequence, camids: Sequence[int] | None = None, batch_size: int = 128) -> Embedding:
        """Features [N, E] and masks [N, E] for a list of images (paths, PIL images or numpy arrays)."""
        feats, masks = [], []
        for start in range(0, len(images), batch_size):
            batch = self.preprocess(images[start : start + batch_size]).to(self.device)
            cams = None if camids is None else torch.as_tensor(camids[start : start + batch_size], device=self.device)
            out = self.model(batch, cams, extras=False)
            feats.append(torch.nn.functional.normalize(out.proj.float(), dim=1).cpu())
            if out.mask is not None:
                masks.append(out.mask.float().cpu())
        if not feats:
            raise ValueError("embed() needs at least one image")
        return Embedding(torch.cat(feats).numpy(), torch.cat(masks).numpy() if masks else None)

    def embed_records(self, records: list[ReIDRecord], batch_size: int = 128) -> Embedding:
        return self.embed(
            [r.path for r in records], [r.camid for r in records] if self._uses_cameras else None, batch_size
        )

    @property
    def _uses_cameras(self) -> bool:
        return self.model.encoder.camera is not None

    def similarity(
        self, query: Embedding, gallery: Embedding, use_mask: bool = True, symmetric: bool = False
    ) -> np.ndarray:
        """[Q, G] similarity: masked cosine with the query's mask by default."""
        return np.asarray(
            similarity(
                query.features,
                query.masks,
                gallery.features,
                gallery.masks,
                use_mask and query.masks is not None,
                symmetric,
            )
        )

    def search(
        self, query: Embedding, gallery: Embedding, top_k: int = 10, use_mask: bool = True, symmetric: bool = False
    ) -> SearchResult:
        sim = torch.from_numpy(self.similarity(query, gallery, use_mask, symmetric))
        scores, indices = sim.topk(min(top_k, sim.shape[1]), dim=1)
        return SearchResult(indices.numpy(), scores.numpy())

    def evaluate_split(
        self, split: Split, use_mask: bool = True, symmetric: bool = False, batch_size: int = 128
    ) -> ReIDMetrics:
        query, gallery = self.embed_records(split.query, batch_size), self.embed_records(split.gallery, batch_size)
        return evaluate_similarity(split, self.similarity(query, gallery, use_mask, symmetric))


@dataclass
class RankedItem:
    gallery_index: int
    path: str
    pid: int
    camid: int
    score: float
    correct: bool


@dataclass
class Retrieval:
    query_index: int
    query_path: str
    items: list[RankedItem]  # top-k, best first, same-pid-same-camera items hidden
    ap: float  # average precision of the query over the whole filtered gallery (NaN without a true match)
    first_true_rank: int  # 1-based; 0 when no true match remains
    hidden: int  # gallery items hidden by the same-pid-same-camera rule


class BenchmarkExplorer:
    """A benchmark split with its query/gallery embeddings, from a DPM++ checkpoint or the HSV floor."""

    def __init__(self, split: Split, pipeline: Pipeline | None = None) -> None:
        self.split, self.pipeline = split, pipeline
        if pipeline is not None:
            self.query, self.gallery = pipeline.embed_records(split.query), pipeline.embed_records(split.gallery)
        else:
            from dpmpp.eval.baseline_eval import baseline_features

            self.query = Embedding(baseline_features("hsv", split.query), None)
            self.gallery = Embedding(baseline_features("hsv", split.gallery), None)
        self.g_pids = np.array([r.pid for r in split.gallery])
        self.g_camids = np.array([r.camid for r in split.gallery])

    @property
    def model_name(self) -> str:
        if self.pipeline is None:
            return "HSV stripe histograms (no learning)"
        return f"DPM++ {self.pipeline.config.preset} ({self.pipeline.folder})"

    def similarity(self, use_mask: bool = True) -> np.ndarray:
        if self.pipeline is None:
            return self.query.features @ self.gallery.features.T
        return self.pipeline.similarity(self.query, self.gallery, use_mask)

    def retrieve(self, query_index: int, top_k: int = 10, use_mask: bool = True) -> Retrieval:
        if not 0 <= query_index < len(self.split.query):
            raise IndexError(f"query index {query_index} outside 0..{len(self.split.query) - 1}")
        query = self.split.query[query_index]
        one = Embedding(
            self.query.features[query_index : query_index + 1],
            None if self.query.masks is None else self.query.masks[query_index : query_index + 1],
        )
        scores = (
            self.pipeline.similarity(one, self.gallery, use_mask)
            if self.pipeline is not None
            else one.features @ self.gallery.features.T
        )[0]
        hidden = (self.g_pids == query.pid) & (self.g_camids == query.camid)
        order = np.argsort(-np.where(hidden, -np.inf, scores), kind="stable")[: len(scores) - int(hidden.sum())]
        correct = self.g_pids[order] == query.pid
        hits = np.flatnonzero(correct)
        ap = float(np.mean((np.arange(len(hits)) + 1) / (hits + 1))) if len(hits) else float("nan")
        items = [
            RankedItem(
                int(i),
                self.split.gallery[i].path,
                int(self.g_pids[i]),
                int(self.g_camids[i]),
                float(scores[i]),
                bool(c),
            )
            for i, c in zip(order[:top_k], correct[:top_k])
        ]
        return Retrieval(query_index, query.path, items, ap, int(hits[0]) + 1 if len(hits) else 0, int(hidden.sum()))
