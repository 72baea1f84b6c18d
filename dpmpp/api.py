"""The facade the app and scripts use. Returns plain dataclasses and numpy arrays, never UI types."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dpmpp import embedding_cache
from dpmpp.atomic import write_text
from dpmpp.caching import shared_cache
from dpmpp.cases import CaseError, build_case, read_case
from dpmpp.config import preset_names
from dpmpp.data.datasets import dataset_names, load_split
from dpmpp.data.foreground import PersonMasks
from dpmpp.data.images import MAX_PIXELS, ImageLoadError, check_size, image_size, load_image
from dpmpp.data.occluders import FILLS, PasteParams, load_bank, paint, paste
from dpmpp.data.patch_transfer import SaliencyPatchTransfer, patch_fraction
from dpmpp.data.records import ReIDRecord, Split
from dpmpp.data.transforms import build_transforms, denormalize
from dpmpp.engine import checkpoint
from dpmpp.engine.checkpoint import CheckpointError, weights_hash
from dpmpp.engine.distributed import pick_device
from dpmpp.eval.extract import evaluate_similarity, extract, similarity
from dpmpp.eval.metrics import ReIDMetrics
from dpmpp.jobs import COMPONENTS, MAX_EPOCHS, StopRefused, TrainingJobs, training_config
from dpmpp.model.dpmpp import build_model
from dpmpp.model.peers import PEERS, PeerEmbedder, PeerUnavailable, load_peer
from dpmpp.model_card import model_card_markdown
from dpmpp.paths import ASSETS, CHECKPOINTS, DEFAULT_CHECKPOINT

__all__ = [
    # the facade proper
    "Pipeline",
    "Embedding",
    "SearchResult",
    "TransferView",
    "Explanation",
    "PEERS",
    "PeerEmbedder",
    "PeerUnavailable",
    "load_peer",
    "CHECKPOINT_FILES",
    "safe_name",
    "install_checkpoint",
    "listed_twin",
    # for the app and other front ends: what they need from the layers below, so that they import only this
    # facade, dpmpp.explorer and dpmpp.viz (tests/test_architecture.py)
    "ASSETS",
    "CHECKPOINTS",
    "DEFAULT_CHECKPOINT",
    "load_split",
    "dataset_names",
    "preset_names",
    "PersonMasks",
    "load_image",
    "ImageLoadError",
    "MAX_PIXELS",
    "check_size",
    "image_size",
    "FILLS",
    "PasteParams",
    "load_bank",
    "paint",
    "paste",
    "CheckpointError",
    "weights_hash",
    "model_card_markdown",
    "CaseError",
    "build_case",
    "read_case",
    "write_text",
    "COMPONENTS",
    "MAX_EPOCHS",
    "StopRefused",
    "TrainingJobs",
    "training_config",
    "shared_cache",
]

logger = logging.getLogger(__name__)


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """A normalised [3, H, W] tensor back to a displayable [H, W, 3] uint8 array."""
    return (denormalize(image[None])[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


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
        self._model_digest: str | None = None  # of the weights files, when first needed

    @classmethod
    def from_checkpoint(
        cls, path: str | Path | None = None, device: str | None = None, inference_threads: int | None = None
    ) -> "Pipeline":
        """`inference_threads`: the CPU threads OpenVINO runs an OMZ encoder with (default: torch's thread count).
        Concurrent calls queue on OpenVINO's one stream, so a server answering many small requests at once gives it
        every core, even where each request's torch work uses one thread."""
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
        if resolved.type == "cpu" and hasattr(model.encoder, "use_openvino"):
            # an OMZ encoder: OpenVINO runs it faster
            model.encoder.use_openvino(inference_threads or torch.get_num_threads())
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
        if len(images) == 0:
            raise ValueError("embed() needs at least one image")

        def batches():
            for start in range(0, len(images), batch_size):
                chunk = None if camids is None else torch.as_tensor(camids[start : start + batch_size])
                yield {"image": self.preprocess(images[start : start + batch_size]), "camid": chunk}

        feats, masks = extract(self.model, batches(), self.device)
        return Embedding(feats.numpy(), None if masks is None else masks.numpy())

    def embed_records(self, records: list[ReIDRecord], batch_size: int = 128, cache: bool = False) -> Embedding:
        """`embed` of dataset records. With `cache` (and a checkpoint folder), the result is kept on disk under the
        weights' and images' digests (`dpmpp.embedding_cache`), and found there the next time."""
        key = None
        if cache and self.folder is not None:
            if self._model_digest is None:
                files = [self.folder / checkpoint.WEIGHTS, self.folder / checkpoint.TEXT]
                self._model_digest = embedding_cache.file_digest(*[f for f in files if f.is_file()])
                self._model_digest += f"|{self.image_size}|{self.device.type}"
            key = embedding_cache.entry_key(self._model_digest, records, self._uses_cameras)
            found = embedding_cache.load(key)
            if found is not None and len(found[0]) == len(records):
                return Embedding(*found)
        embedding = self.embed(
            [r.path for r in records], [r.camid for r in records] if self._uses_cameras else None, batch_size
        )
        if key is not None:
            embedding_cache.store(key, embedding.features, embedding.masks)
        return embedding

    @property
    def _uses_cameras(self) -> bool:
        return self.model.encoder.camera is not None

    @torch.no_grad()
    def saliency(self, images: Sequence) -> np.ndarray:
        """Per-patch saliency [N, h, w] in (0, 1) from the model's saliency head."""
        batch = self.preprocess(images).to(self.device)
        return self.model.saliency(batch).float().cpu().numpy()

    def person_saliency(self, records: Sequence[ReIDRecord], masks) -> np.ndarray:
        """Per-patch person fraction [N, h, w] in [0, 1] from a dataset's person masks (dpmpp.data.foreground),
        on the same grid as `saliency()`: what training's patch transfer uses where a dataset has such masks."""
        pixels = []
        for record in records:
            person = torch.from_numpy(masks(record, np.asarray(load_image(record.path)))).float()[None, None]
            pixels.append(torch.nn.functional.interpolate(person, size=self.image_size, mode="nearest")[0])
        return patch_fraction(torch.stack(pixels), self.model.encoder.patch_size).numpy()

    def transfer(
        self,
        anchor,
        candidates: Sequence,
        partner_index: int | None = None,
        shift: int | None = None,
        threshold: float | None = None,
        candidate_saliency: np.ndarray | None = None,
    ) -> TransferView:
        """Occlude `anchor` with a partner's real occlusion pattern (SPT, docs/method.md §4).

        The partner is `candidates[partner_index]`, or, when None, the candidate and shift with the highest
        occlusion-aware IoU (deterministic: the best pair rather than a draw from the top 10 %).
        `candidate_saliency` [M, h, w] (from `saliency(candidates)`) spares recomputing a fixed pool.
        """
        if len(candidates) == 0:
            raise ValueError("transfer() needs at least one partner candidate")
        if partner_index is not None and not 0 <= partner_index < len(candidates):
            raise IndexError(f"partner_index {partner_index} outside 0..{len(candidates) - 1}")
        aug = self.config.aug
        if threshold is not None:
            aug = dataclasses.replace(aug, saliency_threshold=threshold)
        spt = SaliencyPatchTransfer.from_config(aug, True, tuple(self.model.encoder.patch_size))
        if candidate_saliency is None:
            candidate_saliency = self.saliency(candidates)
        anchor_image = self.preprocess([anchor])
        with torch.no_grad():
            anchor_saliency = self.model.saliency(anchor_image.to(self.device)).float().cpu()
        saliency = torch.cat([anchor_saliency, torch.as_tensor(candidate_saliency, dtype=torch.float32)])
        masks = spt.binarise(saliency)
        chosen, chosen_shift, oiou = spt.best_partner(masks, partner_index, shift)
        pair = torch.cat([anchor_image, self.preprocess([candidates[chosen]])])  # [anchor, partner]
        mixed_image, region = spt.mix_pair(pair, masks[[0, chosen + 1]], chosen_shift)
        return TransferView(
            image=_to_uint8(mixed_image),
            anchor=_to_uint8(pair[0]),
            partner=_to_uint8(pair[1]),
            anchor_saliency=saliency[0].numpy(),
            partner_saliency=saliency[chosen + 1].numpy(),
            anchor_mask=masks[0].numpy(),
            partner_mask=masks[chosen + 1].numpy(),
            region=region.numpy(),
            partner_index=chosen,
            shift=chosen_shift,
            oiou=oiou,
            occluded_fraction=float(region.float().mean()),
        )

    def explain(self, image, pid: int | None = None, use_mask: bool = True) -> Explanation:
        """Grad-CAM of `image` toward the prototype of `pid` (default: the best-matching prototype)."""
        pids = list(self.meta.get("pids", []))
        if pid is not None and pid not in pids:
            raise ValueError(f"identity {pid} has no prototype; this model knows {pids}")
        from dpmpp.eval.gradcam import prototype_gradcam  # grad-cam is needed only here

        batch = self.preprocess([image]).to(self.device)
        classes = None if pid is None else [pids.index(pid)]
        maps, chosen, scores = prototype_gradcam(self.model, batch, classes, use_mask)
        index = int(chosen[0])
        return Explanation(
            maps[0], _to_uint8(batch[0].cpu()), index, int(pids[index]) if pids else index, float(scores[0])
        )

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
class TransferView:
    """One saliency-guided patch transfer, everything at model input size, ready to show or embed."""

    image: np.ndarray  # [H, W, 3] uint8: the anchor carrying the partner's occlusion
    anchor: np.ndarray  # [H, W, 3] uint8
    partner: np.ndarray  # [H, W, 3] uint8
    anchor_saliency: np.ndarray  # [h, w] in (0, 1)
    partner_saliency: np.ndarray  # [h, w] in (0, 1)
    anchor_mask: np.ndarray  # [h, w] bool, binarised saliency (True = person)
    partner_mask: np.ndarray  # [h, w] bool
    region: np.ndarray  # [H, W] bool: pixels taken from the partner
    partner_index: int  # index into the candidates
    shift: int  # circular shift of the anchor, in patch columns
    oiou: float  # occlusion-aware IoU of the pair
    occluded_fraction: float  # share of pixels that came from the partner


@dataclass
class Explanation:
    heatmap: np.ndarray  # [H, W] Grad-CAM in [0, 1] at model input size
    image: np.ndarray  # [H, W, 3] uint8, the input at model input size
    class_index: int  # prototype explained toward
    pid: int  # that prototype's dataset identity
    similarity: float  # (masked) cosine to that prototype


CHECKPOINT_FILES = (checkpoint.CONFIG, checkpoint.WEIGHTS, checkpoint.TEXT, checkpoint.METRICS)


def safe_name(name: str | None, default: str) -> str:
    """A folder name from user text: letters, digits, '-' and '_' only."""
    return "".join(c for c in (name or "").strip() if c.isalnum() or c in "-_") or default


def install_checkpoint(files: Sequence[str | Path], root: str | Path, name: str | None) -> Path:
    """Copy a checkpoint's files into a new folder `root/name`, only if they load as a model; returns it.

    Raises CheckpointError, saving nothing, for missing or unexpected files, an existing folder, or files that do
    not load (a staging folder beside the target is renamed into place only after the load succeeds).
    """
    by_name = {Path(f).name: Path(f) for f in files}
    missing = [n for n in CHECKPOINT_FILES[:2] if n not in by_name]
    if missing:
        raise checkpoint.CheckpointError(
            f"a checkpoint needs {', '.join(CHECKPOINT_FILES[:2])} at least; missing {missing}"
        )
    unexpected = sorted(set(by_name) - set(CHECKPOINT_FILES))
    if unexpected:
        raise checkpoint.CheckpointError(
            f"unexpected files {unexpected}; a checkpoint holds {', '.join(CHECKPOINT_FILES)}"
        )
    root = Path(root)
    target = root / safe_name(name, "uploaded")
    if target.exists():
        raise checkpoint.CheckpointError(f"{target} already exists; choose another name")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        for file_name, path in by_name.items():
            shutil.copyfile(path, staging / file_name)
        Pipeline.from_checkpoint(staging, device="cpu")  # refuse anything that does not load as a model
        staging.rename(target)
    except OSError as error:
        raise checkpoint.CheckpointError(f"could not save the checkpoint: {error}") from error
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


@lru_cache(maxsize=256)
def _weights_hash(folder: str, size: int, mtime_ns: int) -> str:
    return weights_hash(folder)


def listed_twin(files: Sequence[str | Path], folders: Sequence[str | Path]) -> str | None:
    """The folder among `folders` whose weights are the `model.safetensors` among `files`, else None (also None
    when the files are not named as a checkpoint's: `install_checkpoint` then says what is wrong).

    The folders' hashes are computed once per file version; a folder without weights is skipped. Raises OSError
    when the files cannot be read.
    """
    paths = [Path(f) for f in files]
    weights = next((p for p in paths if p.name == checkpoint.WEIGHTS), None)
    if weights is None or not {p.name for p in paths} <= set(CHECKPOINT_FILES):
        return None
    listed = {}
    for folder in folders:
        try:
            stat = (Path(folder) / checkpoint.WEIGHTS).stat()
            listed[_weights_hash(str(folder), stat.st_size, stat.st_mtime_ns)] = str(folder)
        except OSError:
            continue
    return listed.get(weights_hash(weights.parent))
