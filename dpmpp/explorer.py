"""A benchmark split with its embeddings: ranked retrievals, per-query failure analysis, clean counterparts."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
from PIL import Image

from dpmpp.api import Embedding, Explanation, Pipeline, TransferView
from dpmpp.data.foreground import PersonMasks
from dpmpp.data.records import ReIDRecord, Split
from dpmpp.eval.baselines import HSVEmbedder
from dpmpp.eval.extract import evaluate_similarity, top_match_pids
from dpmpp.eval.metrics import ReIDMetrics, evaluate
from dpmpp.sensitivity import (  # noqa: F401 - the facade's occlusion sensitivity
    GREY,
    MAX_POSITIONS,
    SensitivityMap,
    grey_block,
    occlusion_sensitivity,
    person_occluder,
)

OCCLUSION_BINS = (0.0, 0.3, 0.5, 1.01)  # query occluded-fraction bins (pets09_occ from 0.15, cuhk01_occ from 0.13)
PARTNER_OCCLUSION = 0.15  # a training crop at least this occluded lends its occlusion in the app's patch transfer
EMBEDDING_MEMO = 1024  # pixel arrays whose embedding an explorer remembers (about 4 kB each)


def transfer_partners(split: Split) -> list[ReIDRecord]:
    """Partners for patch transfer: real occluded training crops (their occlusion is what gets transferred)."""
    return [r for r in split.train if float(r.meta.get("occluded_fraction", 0)) >= PARTNER_OCCLUSION]


@dataclass
class RankedItem:
    gallery_index: int
    path: str
    pid: int
    camid: int
    score: float
    correct: bool | None  # None when the query's identity is unknown (an uploaded image)


@dataclass
class Retrieval:
    items: list[RankedItem]  # top-k, best first, same-pid-same-camera items hidden
    ap: float  # average precision over the whole filtered gallery (NaN without a true match or identity)
    first_true_rank: int  # 1-based; 0 when no true match remains
    hidden: int  # gallery items hidden by the same-pid-same-camera rule
    query_path: str = ""
    query_index: int = -1


def _pixel_key(image) -> bytes | None:
    """A content key of a pixel array or PIL image (its shape, type and bytes); None for a path."""
    if isinstance(image, Image.Image):
        image = np.asarray(image)
    if not isinstance(image, np.ndarray):
        return None
    digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16)
    digest.update(f"{image.shape}{image.dtype}".encode())
    return digest.digest()


class FeatureEmbedder(Protocol):
    """A model without a mask: the HSV floor, a pretrained peer (dpmpp.model.peers)."""

    name: str

    def embed(self, images) -> np.ndarray:
        """Images (paths, PIL images or arrays) -> unit features [N, D]."""


class MasklessModel:
    """A `FeatureEmbedder` behind the Pipeline's interface (embed, embed_records, similarity): embeddings without
    masks, matched by plain cosine. The explorer, and so every view, treats it as it treats a checkpoint."""

    def __init__(self, embedder: FeatureEmbedder) -> None:
        self.embedder = embedder

    def embed(self, images) -> Embedding:
        return Embedding(self.embedder.embed(list(images)), None)

    def embed_records(self, records: list[ReIDRecord], cache: bool = False) -> Embedding:
        return self.embed([r.path for r in records])

    def similarity(self, query: Embedding, gallery: Embedding, use_mask: bool = True) -> np.ndarray:
        return query.features @ gallery.features.T


class BenchmarkExplorer:
    """Query/gallery embeddings of a split, from a DPM++ checkpoint or a `FeatureEmbedder` (default: HSV floor)."""

    def __init__(self, split: Split, pipeline: Pipeline | None = None, embedder: FeatureEmbedder | None = None) -> None:
        self.split, self.pipeline = split, pipeline
        self.embedder = None if pipeline is not None else embedder or HSVEmbedder()
        self.model = pipeline if pipeline is not None else MasklessModel(self.embedder)  # one interface for both
        # a checkpoint's embeddings of a benchmark are kept on disk (dpmpp.embedding_cache): a reload is quick
        self.query = self.model.embed_records(split.query, cache=True)
        self.gallery = self.model.embed_records(split.gallery, cache=True)
        self.g_pids = np.array([r.pid for r in split.gallery])
        self.g_camids = np.array([r.camid for r in split.gallery])
        self._similarity: dict[bool, np.ndarray] = {}
        self._metrics: dict[bool, ReIDMetrics] = {}
        self._memo: OrderedDict[bytes, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        self._memo_lock = threading.Lock()

    @property
    def has_mask(self) -> bool:
        return self.query.masks is not None

    @property
    def has_saliency(self) -> bool:
        """A saliency head, which patch transfer needs: a DPM++ checkpoint that has one (not a `FeatureEmbedder`)."""
        return self.pipeline is not None and self.pipeline.model.saliency_head is not None

    @property
    def can_explain(self) -> bool:
        """Grad-CAM toward an identity prototype: a DPM++ checkpoint (a `FeatureEmbedder` has no prototypes)."""
        return self.pipeline is not None

    def explain(self, image, pid: int | None = None) -> Explanation:
        """Grad-CAM of `image` toward the prototype of `pid` (default: the best-matching one); see `can_explain`."""
        if not self.can_explain:
            raise ValueError("Grad-CAM needs a DPM++ checkpoint")
        return self.pipeline.explain(image, pid=pid)

    def partner_source(self, person_masks: PersonMasks | None) -> str:
        """Where the patch-transfer partners' person maps come from, as in training: the benchmark's silhouettes
        (`person_masks`) when the model was trained with `aug.saliency_source=auto`, else the saliency head."""
        auto = self.pipeline.config.aug.saliency_source == "auto" and person_masks is not None
        return "silhouette" if auto else "head"

    def partner_saliency(self, partners: list[ReIDRecord], person_masks: PersonMasks | None) -> np.ndarray:
        """Per-patch person maps [M, h, w] of a pool of partners (from `partner_source`): compute once per model."""
        if self.partner_source(person_masks) == "silhouette":
            return self.pipeline.person_saliency(partners, person_masks)
        return self.pipeline.saliency([r.path for r in partners])

    def transfer(
        self,
        image,
        partners: list[ReIDRecord],
        partner_saliency: np.ndarray,
        partner_index: int | None = None,
        shift: int | None = None,
    ) -> TransferView:
        """Occlude `image` with the real occlusion of one of `partners` (SPT, `Pipeline.transfer`); see
        `has_saliency`. `partner_saliency` is `partner_saliency(partners, ...)`."""
        if not self.has_saliency:
            raise ValueError("patch transfer needs a DPM++ checkpoint with a saliency head")
        return self.pipeline.transfer(
            image,
            [r.path for r in partners],
            partner_index=partner_index,
            shift=shift,
            candidate_saliency=partner_saliency,
        )

    def _key(self, use_mask: bool) -> bool:
        return bool(use_mask) and self.has_mask

    def similarity(self, use_mask: bool = True) -> np.ndarray:
        """[Q, G] query-gallery similarity, computed once per matching rule."""
        key = self._key(use_mask)
        if key not in self._similarity:
            self._similarity[key] = self.scores(self.query, key)
        return self._similarity[key]

    def scores(self, query: Embedding, use_mask: bool = True) -> np.ndarray:
        """[N, G] similarity of any embedded images (e.g. an occluded query) to the gallery."""
        return self.model.similarity(query, self.gallery, self._key(use_mask))

    def embed(self, images) -> Embedding:
        """Embed images (paths, PIL images or arrays). Pixel arrays and PIL images are remembered by their content
        (the last `EMBEDDING_MEMO`), so the views of one query (retrieval, mask, compare) embed it once."""
        images = list(images)
        keys = [_pixel_key(image) for image in images]
        rows: list[tuple[np.ndarray, np.ndarray | None] | None] = [None] * len(images)
        with self._memo_lock:
            for i, key in enumerate(keys):
                if key is not None and key in self._memo:
                    self._memo.move_to_end(key)
                    rows[i] = self._memo[key]
        todo = [i for i, row in enumerate(rows) if row is None]
        if len(todo) == len(images):
            fresh = self.model.embed(images)
            self._remember(keys, fresh)
            return fresh
        if todo:
            fresh = self.model.embed([images[i] for i in todo])
            self._remember([keys[i] for i in todo], fresh)
            for row, i in enumerate(todo):
                rows[i] = (fresh.features[row], None if fresh.masks is None else fresh.masks[row])
        masks = None if rows[0][1] is None else np.stack([mask for _, mask in rows])
        return Embedding(np.stack([feature for feature, _ in rows]), masks)

    def remember_query(self, image, index: int) -> None:
        """`image` is benchmark query `index` as loaded from its file: its embedding is the one already computed."""
        key = _pixel_key(image)
        masks = self.query.masks
        self._remember(
            [key],
            Embedding(self.query.features[index : index + 1], None if masks is None else masks[index : index + 1]),
        )

    def _remember(self, keys: list[bytes | None], embedded: Embedding) -> None:
        with self._memo_lock:
            for row, key in enumerate(keys):
                if key is not None:  # copies: a caller may change the arrays it was given
                    mask = None if embedded.masks is None else embedded.masks[row].copy()
                    self._memo[key] = (embedded.features[row].copy(), mask)
            while len(self._memo) > EMBEDDING_MEMO:
                self._memo.popitem(last=False)

    def metrics(self, use_mask: bool = True) -> ReIDMetrics:
        """The benchmark's metrics, with per-query AP and first-true-match rank (the metric's own numbers)."""
        key = self._key(use_mask)
        if key not in self._metrics:
            self._metrics[key] = evaluate_similarity(self.split, self.similarity(key))
        return self._metrics[key]

    def rank(self, scores: np.ndarray, pid: int | None, camid: int | None, top_k: int = 10) -> Retrieval:
        """Rank the gallery by `scores` [G] for a query of identity `pid` seen by `camid` (None: unknown)."""
        hidden = (self.g_pids == pid) & (self.g_camids == camid) if pid is not None else np.zeros(len(scores), bool)
        order = np.argsort(-np.where(hidden, -np.inf, scores), kind="stable")[: len(scores) - int(hidden.sum())]
        ap, first = float("nan"), 0
        if pid is not None and (self.g_pids[~hidden] == pid).any():
            metrics = evaluate(1.0 - scores[None], np.array([pid]), self.g_pids, np.array([camid]), self.g_camids)
            ap, first = float(metrics.ap[0]), int(metrics.first_true_rank[0])
        items = [
            RankedItem(
                int(i),
                self.split.gallery[i].path,
                int(self.g_pids[i]),
                int(self.g_camids[i]),
                float(scores[i]),
                None if pid is None else bool(self.g_pids[i] == pid),
            )
            for i in order[:top_k]
        ]
        return Retrieval(items, ap, first, int(hidden.sum()))

    def best_matches(self, scores: np.ndarray, pid: int, camid: int | None) -> tuple[int | None, int | None]:
        """Gallery indices of the best-scoring true match and the best-scoring wrong match by `scores` [G], with the
        same-person-same-camera items hidden as in `rank` (None where there is none); without ranking the gallery."""
        shown = ~((self.g_pids == pid) & (self.g_camids == camid))
        best = []
        for wanted in (self.g_pids == pid, self.g_pids != pid):
            candidates = np.flatnonzero(shown & wanted)
            best.append(int(candidates[np.argmax(scores[candidates])]) if len(candidates) else None)
        return best[0], best[1]

    def retrieve(self, query_index: int, top_k: int = 10, use_mask: bool = True) -> Retrieval:
        if not 0 <= query_index < len(self.split.query):
            raise IndexError(f"query index {query_index} outside 0..{len(self.split.query) - 1}")
        query = self.split.query[query_index]
        result = self.rank(self.similarity(use_mask)[query_index], query.pid, query.camid, top_k)
        result.query_path, result.query_index = query.path, query_index
        return result

    def prototype_gap(self) -> dict[str, float] | None:
        """Mean cosine of gallery features to their own prototype, to the others, and between prototypes."""
        if self.pipeline is None or self.pipeline.model.prototypes is None:
            return None
        prototypes = self.pipeline.model.prototypes.detach().float().cpu().numpy()
        prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
        mapped, foreign = model_prototype_pids(self, self.pipeline.meta.get("pids", []))
        row_of = {int(pid): row for row, (pid, alien) in enumerate(zip(mapped, foreign)) if not alien}
        known = np.array([int(pid) in row_of for pid in self.g_pids], bool)
        if not known.any():  # unseen persons (a test split): no gallery crop has a prototype of its own
            return None
        labels = np.array([row_of[int(pid)] for pid in self.g_pids[known]], dtype=np.int64)
        cos = self.gallery.features[known] @ prototypes.T
        own = cos[np.arange(len(labels)), labels]
        between = prototypes @ prototypes.T
        return {
            "own": float(own.mean()),
            "others": float((cos.sum(1) - own).mean() / max(len(prototypes) - 1, 1)),
            "between_prototypes": float(between[~np.eye(len(prototypes), dtype=bool)].mean()),
        }

    def clean_counterpart(self, query_index: int) -> int | None:
        """The holistic gallery crop of the same track nearest in time: the query without its occluder."""
        query = self.split.query[query_index]
        frame = query.meta.get("frame")
        candidates = [i for i, r in enumerate(self.split.gallery) if r.camid == query.camid and r.pid == query.pid]
        if not candidates or frame is None:
            return None
        return min(candidates, key=lambda i: (abs(self.split.gallery[i].meta.get("frame", 0) - frame), i))

    def query_table(self, use_mask: bool = True) -> pd.DataFrame:
        """One row per query: identity, occlusion (and the person in front, when one hides it), AP with the mask on
        and off and against its clean counterpart, the first true match's rank, and the top match's identity."""
        masked, plain = self.metrics(use_mask), self.metrics(False)
        top = top_match_pids(self.split, self.similarity(self._key(use_mask)))
        clean_ap = self._clean_query_ap(use_mask)
        if clean_ap is None:
            counterparts = [self.clean_counterpart(i) for i in range(len(self.split.query))]
            clean_ap = self._counterpart_ap(counterparts, use_mask)
        rows = []
        for i, record in enumerate(self.split.query):
            rows.append(
                {
                    "query": i,
                    "file": record.path.rsplit("/", 1)[-1],
                    "person": record.pid,
                    "track": record.camid,
                    "frame": record.meta.get("frame", -1),
                    "occluder": record.meta.get("occluder_kind") or record.meta.get("occluder", ""),
                    "occluded": round(float(record.meta.get("occluded_fraction", float("nan"))), 3),
                    "AP": round(float(masked.ap[i]), 4),
                    "AP no mask": round(float(plain.ap[i]), 4),
                    "AP clean": round(clean_ap[i], 4),
                    "ΔAP clean→occluded": round(float(masked.ap[i]) - clean_ap[i], 4),
                    "first true rank": int(masked.first_true_rank[i]),
                    "top match": int(top[i]),
                    "occluding person": int(record.meta.get("occluder_pid") or 0) or None,
                }
            )
        return pd.DataFrame(rows).astype({"occluding person": "Int64"})  # empty where no person hides the query

    def _clean_query_ap(self, use_mask: bool) -> list[float] | None:
        """AP of each query's own image before its synthetic occluder was pasted, where the benchmark keeps it
        (`meta["clean_path"]`, as in cuhk01_occ); None otherwise."""
        paths = [record.meta.get("clean_path") for record in self.split.query]
        if not paths or not all(paths):
            return None
        clean = self.model.embed_records(
            [ReIDRecord(path, r.pid, r.camid, {}) for path, r in zip(paths, self.split.query)], cache=True
        )
        q_pids = np.array([r.pid for r in self.split.query])
        q_camids = np.array([r.camid for r in self.split.query])
        metrics = evaluate(1.0 - self.scores(clean, use_mask), q_pids, self.g_pids, q_camids, self.g_camids)
        return metrics.ap.tolist()

    def _counterpart_ap(self, counterparts: list[int | None], use_mask: bool) -> list[float]:
        chosen = sorted({c for c in counterparts if c is not None})
        if not chosen:
            return [float("nan")] * len(counterparts)
        sub = Embedding(
            self.gallery.features[chosen], None if self.gallery.masks is None else self.gallery.masks[chosen]
        )
        scores = self.scores(sub, use_mask)
        pids, camids = self.g_pids[chosen], self.g_camids[chosen]
        metrics = evaluate(1.0 - scores, pids, self.g_pids, camids, self.g_camids)
        ap_of = dict(zip(chosen, metrics.ap.tolist()))
        return [ap_of[c] if c is not None else float("nan") for c in counterparts]

    def by_occlusion(self) -> pd.DataFrame:
        """Rank-1 and mAP per occluded-fraction bin, with the mask on and off."""
        fractions = np.array([float(r.meta.get("occluded_fraction", np.nan)) for r in self.split.query])
        rows = []
        for low, high in zip(OCCLUSION_BINS[:-1], OCCLUSION_BINS[1:]):
            members = (fractions >= low) & (fractions < high)
            for label, use_mask in (("mask on", True), ("mask off", False)):
                if use_mask and not self.has_mask:
                    continue
                metrics = self.metrics(use_mask)
                valid = members & (metrics.first_true_rank > 0)
                rows.append(
                    {
                        "bin": f"{low:.0%}–{min(high, 1):.0%}",
                        "matching": label,
                        "queries": int(members.sum()),
                        "rank-1": float((metrics.first_true_rank[valid] == 1).mean()) if valid.any() else float("nan"),
                        "mAP": float(np.nanmean(metrics.ap[valid])) if valid.any() else float("nan"),
                    }
                )
        return pd.DataFrame(rows)


@dataclass
class PrototypeMap:
    """A 2-D UMAP of identity prototypes, gallery and query features (fixed seed), able to place new points."""

    coords: np.ndarray  # [N, 2]
    kind: list[str]  # "prototype", "gallery" or "query" per point
    pid: np.ndarray  # [N]
    index: np.ndarray  # [N] index within its kind
    occluded_fraction: np.ndarray  # [N], NaN where unknown
    correct: np.ndarray  # [N] rank-1 correct for queries, NaN otherwise
    reducer: object
    note: str  # what was included, and any subsampling
    features: np.ndarray  # [N, E] unit features of the mapped points (nearest neighbours are found here)
    paths: list[str]  # image file per point ("" for prototypes)
    shown: np.ndarray | None = None  # [N, 2] where each point is drawn (a prototype: among its nearest features)
    foreign: np.ndarray | None = None  # [N] a prototype of an identity outside the benchmark (training only)

    def __post_init__(self):
        if self.shown is None:
            self.shown = self.coords
        if self.foreign is None:
            self.foreign = np.zeros(len(self.coords), bool)

    def neighbours(self, row: int, count: int = 12) -> list[tuple[int, float]]:
        """The `count` points nearest to point `row` by cosine in the prototype space (itself excluded)."""
        similarity = self.features @ self.features[row]
        order = [int(i) for i in np.argsort(-similarity, kind="stable") if i != row][:count]
        return [(i, float(similarity[i])) for i in order]

    def place(self, features: np.ndarray) -> np.ndarray:
        """[M, E] -> [M, 2] coordinates in this map."""
        return self.reducer.transform(features)


def _family(name: str) -> str:
    """The scene a dataset's person numbers belong to: "pets09", "cuhk01", or the name itself."""
    name = str(name or "")
    return next((family for family in ("pets09", "cuhk01") if name.startswith(family)), name)


def benchmark_prototype_pids(
    prototype_pids, benchmark_pids, model_dataset: str = "", benchmark: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """A model's prototype identities in the benchmark's numbering, and which prototypes have no benchmark person.

    Person numbers only mean the same person within one scene. A model trained on the combined `cuhk01_pets09` knows
    CUHK01's persons by their own pid and PETS09's as pid + PETS09_PID_OFFSET; a model trained on one dataset knows
    its persons by their own pid. A prototype is a benchmark person only when its scene is the benchmark's (PETS09
    person 3 is not CUHK01 person 3) and that person is in the benchmark (a test split's persons are never training
    identities). Without dataset names (`model_dataset`, `benchmark`), the scene is guessed from the numbers.
    """
    from dpmpp.data.datasets.combined import PETS09_PID_OFFSET

    pids, known = np.asarray(prototype_pids, dtype=np.int64), set(int(p) for p in benchmark_pids)
    if model_dataset and benchmark:
        combined = model_dataset == "cuhk01_pets09"
        scene = np.array(
            ["pets09" if combined and p >= PETS09_PID_OFFSET else _family(model_dataset) for p in pids], dtype=object
        )
        mapped = np.where(pids >= PETS09_PID_OFFSET, pids - PETS09_PID_OFFSET, pids) if combined else pids.copy()
        foreign = np.array([s != _family(benchmark) or int(m) not in known for s, m in zip(scene, mapped)], bool)
        return np.where(foreign, pids, mapped), foreign
    offset = PETS09_PID_OFFSET if any(int(p) - PETS09_PID_OFFSET in known for p in pids) else 0
    mapped = np.where(pids >= offset, pids - offset, pids) if offset else pids.copy()
    foreign = np.array([(int(p) < offset) or int(m) not in known for p, m in zip(pids, mapped)], bool)
    return np.where(foreign, pids, mapped), foreign


def model_prototype_pids(explorer: BenchmarkExplorer, prototype_pids) -> tuple[np.ndarray, np.ndarray]:
    """`benchmark_prototype_pids` for an explorer's model and benchmark."""
    meta = explorer.pipeline.meta if explorer.pipeline is not None else {}
    benchmark_pids = [r.pid for r in explorer.split.gallery] + [r.pid for r in explorer.split.query]
    return benchmark_prototype_pids(prototype_pids, benchmark_pids, meta.get("dataset", ""), explorer.split.name)


def prototype_persons(explorer: BenchmarkExplorer) -> dict[int, int | None]:
    """The model's prototype identities -> the benchmark person each one is (None: a training identity only)."""
    model_pids = list(explorer.pipeline.meta.get("pids", [])) if explorer.pipeline is not None else []
    mapped, foreign = model_prototype_pids(explorer, model_pids)
    return {int(p): None if f else int(m) for p, m, f in zip(model_pids, mapped, foreign)}


def build_prototype_map(
    explorer: BenchmarkExplorer, seed: int = 0, max_points: int = 20000, nearest: int = 10
) -> PrototypeMap:
    """UMAP of prototypes, gallery and queries. Prototypes sit apart from the image features in the embedding, so
    UMAP puts them in a corner of their own; each is drawn (`shown`) at the mean map position of its `nearest`
    image features by cosine, and a prototype's identity is given in the benchmark's numbering."""
    import umap

    parts, kind, pids, index, fractions, correct, paths = [], [], [], [], [], [], []
    pipeline = explorer.pipeline
    if pipeline is not None and pipeline.model.prototypes is not None:
        prototypes = pipeline.model.prototypes.detach().float().cpu().numpy()
        prototypes = prototypes / np.linalg.norm(prototypes, axis=1, keepdims=True)
        parts.append(prototypes)
        kind += ["prototype"] * len(prototypes)
        pids += list(pipeline.meta.get("pids", range(len(prototypes))))
        index += list(range(len(prototypes)))
        fractions += [np.nan] * len(prototypes)
        correct += [np.nan] * len(prototypes)
        paths += [""] * len(prototypes)
    rank1 = explorer.metrics().first_true_rank == 1
    for name, records, embedding in (
        ("gallery", explorer.split.gallery, explorer.gallery),
        ("query", explorer.split.query, explorer.query),
    ):
        parts.append(embedding.features)
        kind += [name] * len(records)
        pids += [r.pid for r in records]
        index += list(range(len(records)))
        fractions += [float(r.meta.get("occluded_fraction", np.nan)) for r in records]
        correct += [float(c) for c in rank1] if name == "query" else [np.nan] * len(records)
        paths += [r.path for r in records]
    points = np.concatenate(parts).astype(np.float32)
    note = f"all {len(points)} points"
    keep = np.arange(len(points))
    if len(points) > max_points:  # prototypes and queries always kept; the gallery is subsampled
        rng = np.random.default_rng(seed)
        is_gallery = np.array(kind) == "gallery"
        gallery_keep = rng.choice(np.flatnonzero(is_gallery), max_points - int((~is_gallery).sum()), replace=False)
        keep = np.sort(np.concatenate([np.flatnonzero(~is_gallery), gallery_keep]))
        note = f"{len(keep)} of {len(points)} points (gallery subsampled at random, seed {seed})"
    reducer = umap.UMAP(n_neighbors=15, min_dist=0.1, metric="cosine", random_state=seed)
    coords = reducer.fit_transform(points[keep])
    pick = lambda values: np.asarray(values)[keep]  # noqa: E731
    kinds, pid = pick(kind), pick(pids).astype(np.int64)
    is_prototype = kinds == "prototype"
    pid[is_prototype], foreign = model_prototype_pids(explorer, pid[is_prototype])
    shown, features = coords.copy(), points[keep]
    images = np.flatnonzero(~is_prototype)
    for row in np.flatnonzero(is_prototype):
        closest = images[np.argsort(-(features[images] @ features[row]), kind="stable")[:nearest]]
        shown[row] = coords[closest].mean(axis=0)
    outside = np.zeros(len(kinds), bool)
    outside[is_prototype] = foreign
    return PrototypeMap(
        coords,
        list(kinds),
        pid,
        pick(index),
        pick(fractions),
        pick(correct),
        reducer,
        note,
        features,
        list(pick(paths)),
        shown,
        outside,
    )
