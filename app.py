"""dpmpp app: inspect occluded person re-identification with DPM++ in the browser.

`python app.py` serves http://127.0.0.1:7860 with the bundled model and benchmark. This file only wires widgets;
all model logic is in dpmpp.api / dpmpp.explorer, all figures in dpmpp.viz.

Classroom mode (`--classroom`, and the default for any `--host` other than loopback): every visitor can query,
occlude, inspect, compare and export; training, stopping another session's training, uploading checkpoints and
loading unlisted folders are for the teacher, who opens the URL printed at start (`?teacher=TOKEN`) or enters the
token in the Model tab. In every mode, a session idle for `--idle-minutes` is dropped, uploads are checked from their
header before anything decodes them, and errors reach visitors without server paths.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import datetime
import ipaddress
import logging
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import gradio as gr
import numpy as np
import plotly
from gradio import component_meta
from gradio.components.base import server
from PIL import Image
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse

from dpmpp.api import CHECKPOINT_FILES, PEERS, PeerUnavailable, Pipeline, install_checkpoint, load_peer, safe_name
from dpmpp.atomic import write_text
from dpmpp.caching import shared_cache
from dpmpp.cases import CaseError, build_case, read_case
from dpmpp.config import preset_names
from dpmpp.data.datasets import dataset_names, load_split
from dpmpp.data.foreground import PersonMasks
from dpmpp.data.images import MAX_PIXELS, ImageLoadError, check_size, image_size, load_image
from dpmpp.data.occluders import FILLS, PasteParams, load_bank, paint, paste
from dpmpp.engine.checkpoint import CheckpointError, weights_hash
from dpmpp.explorer import BenchmarkExplorer, build_prototype_map
from dpmpp.jobs import COMPONENTS, MAX_EPOCHS, StopRefused, TrainingJobs, training_config
from dpmpp.model_card import model_card_markdown
from dpmpp.paths import ASSETS, CHECKPOINTS, DEFAULT_CHECKPOINT
from dpmpp.viz.curves import cmc_figure, loss_figure, occlusion_bins_figure
from dpmpp.viz.mask_plots import contributions, mask_bars
from dpmpp.viz.overlays import enlarge, heat_overlay, mask_overlay
from dpmpp.viz.rank_strip import rank_strip
from dpmpp.viz.umap_plot import UMAP_JS, UMAP_TEMPLATE, umap_figure

logger = logging.getLogger("dpmpp.app")
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"  # served locally: no CDN
BENCHMARK = ASSETS / "pets09_occ"
HSV = "HSV colour floor (no model)"
PEER_CHOICES = {f"{spec.title}, zero-shot (pretrained peer)": name for name, spec in PEERS.items()}
BASELINES = {HSV, *PEER_CHOICES}  # models without a checkpoint folder: listed by name
SETTINGS = {
    "checkpoint_dir": CHECKPOINTS,
    "data_root": None,
    "start": None,  # the checkpoint loaded first; listed for everyone
    "classroom": False,  # students may not train, upload checkpoints or load unlisted folders
    "teacher_token": os.environ.get("DPMPP_TEACHER_TOKEN") or secrets.token_urlsafe(16),
    "idle_minutes": 30.0,  # a session unused this long is dropped with its images
    "checkpoint_quota_mb": 2048,  # the checkpoint folder: uploads and trainings stop above this
    "upload_quota_mb": 1024,  # files visitors upload, until the cache deletes them (after an hour)
}
JOBS = TrainingJobs()
TEACHER_SESSIONS: set[str] = set()  # sessions that entered the teacher token
UPLOAD_SIDE = 512  # uploaded crops are scaled down to fit this square before a session keeps them
LAYER_PIXELS = 1024 * 1024  # one paint layer (the canvas is the enlarged crop: at most 2048x256)
MAX_LAYERS = 8  # paint layers per Apply
TRAINING_RESERVE_MB = 100  # what one training may write (weights, resumable state, metrics)
ECHO_CHARS, MESSAGE_CHARS = 100, 400  # visitor input echoed in a message; a whole message

ABOUT = (
    "**Data**: PETS 2009 S2.L1, View 001 (© University of Reading; Ferryman & Shahrokni, PETS 2009) with the "
    "MOTChallenge 2015 boxes (Leal-Taixé et al., arXiv:1504.01942), cut into the `pets09_occ` benchmark: "
    "213 occluded queries, 754 holistic gallery crops, 10 persons. A true match must come from another appearance "
    "(track) of the same person. **Model**: DPM++ (dynamic masked metric learning) trained by this project; "
    "its model card is in the Model tab."
)
EXPLAIN_OCCLUDE = (
    "**Occlude the query** three ways. *Patch transfer* (SPT) keeps the query's own pixels where a partner's "
    "person is visible and copies the partner's background and occluders everywhere else. The query inherits a "
    "real occlusion pattern. The partner is the one whose visible silhouette the query's silhouette covers best "
    "(occlusion-aware IoU, over horizontal shifts). *Paste* puts a real occluder from the scene on the query. "
    "*Paint* covers the region you draw."
)
EXPLAIN_MASK = (
    "**The mask** is not over pixels. It is over the dimensions of the identity-prototype space: one value in "
    "(0, 1) per dimension, predicted from the image. The query is compared with each gallery image only in the "
    "dimensions its mask keeps. When a body part is hidden, the dimensions that describe it should switch off."
)
EXPLAIN_RETRIEVAL = (
    "Blue: the query. Green: the same person, red: another person (grey: identity unknown). Gallery crops of the "
    "same person *and* the same track are hidden, as in the metric. Finding the same track again is tracking, "
    "not re-identification. AP is the query's average precision over the whole gallery. *new* marks an item that "
    "entered the top-k after occlusion."
)
EXPLAIN_METRIC = (
    "Rank-1: share of queries whose best match is correct. mAP: mean of the per-query average precision. "
    "ΔAP clean→occluded compares each query with its clean counterpart, the same person on the same track a few "
    "frames away, unoccluded. *top match* is the identity of the best gallery crop; *occluding person* is the "
    "identity of the person in front, for a query hidden behind another person. When the two agree on a miss, the "
    "model recognised the occluder instead of the person."
)


# ----- what visitors are told, and who they are ---------------------------------------------------------------
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(?:[^\s/'\"`()\[\]{},;:]+/)*([^\s/'\"`()\[\]{},;:]*)")


def clip(text, limit: int = ECHO_CHARS) -> str:
    """`text` cut to `limit` characters: what a message may echo of a visitor's input."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "…"


def public(text, limit: int = MESSAGE_CHARS) -> str:
    """A message fit for any visitor: every absolute path reduced to its last part, at most `limit` characters."""
    return clip(_ABSOLUTE_PATH.sub(lambda match: match.group(1) or "/", str(text)), limit)


def refuse(message, error: Exception | None = None) -> gr.Error:
    """A gr.Error for visitors (no server paths, bounded length); the full error goes to the server log."""
    if error is not None:
        logger.info("refused: %s (%s: %s)", clip(message, 200), type(error).__name__, clip(error, 2000))
    return gr.Error(public(message))


def display(path) -> str:
    """A checkpoint folder as visitors see it: relative to the checkpoint folder, else its name."""
    path, root = Path(path), Path(SETTINGS["checkpoint_dir"]).resolve()
    return clip(str(path.relative_to(root)) if path.is_relative_to(root) else path.name or "/")


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def session_of(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


def is_teacher(request: gr.Request | None) -> bool:
    """The teacher: a session that entered the token, a page opened with `?teacher=TOKEN`, or the server's own calls."""
    if request is None:
        return True
    if session_of(request) in TEACHER_SESSIONS:
        return True
    given = str((getattr(request, "query_params", None) or {}).get("teacher", "") or "")
    return bool(given) and secrets.compare_digest(given.encode(), SETTINGS["teacher_token"].encode())


def may_manage(request: gr.Request | None) -> bool:
    """Training, uploading checkpoints and loading unlisted folders: anyone outside classroom mode, else the teacher."""
    return not SETTINGS["classroom"] or is_teacher(request)


def require_manager(request: gr.Request | None, what: str) -> None:
    if not may_manage(request):
        raise gr.Error(f"In classroom mode only the teacher can {what}.")


def folder_bytes(folder) -> int:
    folder = Path(folder)
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def check_checkpoint_quota(adding: int) -> None:
    """Refuse to write `adding` more bytes into the checkpoint folder when that would pass its quota."""
    quota = int(SETTINGS["checkpoint_quota_mb"]) << 20
    used = folder_bytes(SETTINGS["checkpoint_dir"])
    if used + adding > quota:
        raise gr.Error(
            f"The checkpoint folder holds {used >> 20} MB of its {quota >> 20} MB quota; delete old checkpoints "
            "before saving more."
        )


# ----- cached heavy objects (keyed by checkpoint, shared by all sessions) -------------------------------------
def checkpoint_choices() -> list[str]:
    """The listed checkpoints: the start checkpoint and every folder with weights in the checkpoint folder."""
    folder = Path(SETTINGS["checkpoint_dir"]).resolve()
    found = [p.parent for p in folder.glob("*/model.safetensors")] if folder.is_dir() else []
    listed = {str(p) for p in found if not p.name.startswith(".")}  # not an upload's staging folder
    if SETTINGS["start"] is not None and SETTINGS["start"] not in BASELINES:
        listed.add(str(Path(SETTINGS["start"]).resolve()))
    return sorted(listed) + [HSV, *PEER_CHOICES]


def canonical(checkpoint: str | None) -> tuple[str]:
    """One cache key per folder, however it is spelled (`ckpt/`, `//ckpt`, `ckpt/.`); None is the default."""
    if checkpoint in BASELINES:
        return (checkpoint,)
    return (str(Path(DEFAULT_CHECKPOINT if checkpoint is None else checkpoint).resolve()),)


def checkpoint_for(text, request: gr.Request | None = None) -> str:
    """The folder a visitor asked for, resolved (a name is looked up in the checkpoint folder).

    In classroom mode a student gets the same answer for every unlisted folder, whether it exists or not.
    """
    text = "" if text is None else str(text).strip()
    if text in BASELINES:
        return text
    try:
        if not text or "\x00" in text or len(text) > 4096:
            raise ValueError("not a folder name")
        path = (Path(SETTINGS["checkpoint_dir"]) / text).resolve()
    except (ValueError, OSError, RuntimeError) as error:
        raise refuse(f"Could not load {clip(text)!r}: not a checkpoint folder.", error) from error
    if str(path) not in checkpoint_choices() and not may_manage(request):
        raise gr.Error(
            f"{display(path)!r} is not one of the listed checkpoints; in classroom mode only the teacher loads "
            "other folders."
        )
    return str(path)


@shared_cache(maxsize=4, key=canonical)
def explorer_for(checkpoint: str) -> BenchmarkExplorer:
    split = load_split("pets09_occ", BENCHMARK)
    if checkpoint in PEER_CHOICES:
        try:
            return BenchmarkExplorer(split, embedder=load_peer(PEER_CHOICES[checkpoint]))
        except PeerUnavailable as error:
            raise refuse(str(error), error) from error
    pipeline = None if checkpoint == HSV else Pipeline.from_checkpoint(checkpoint, device="cpu")
    return BenchmarkExplorer(split, pipeline)


@shared_cache(maxsize=4, key=canonical)
def prototype_map_for(checkpoint: str):
    return build_prototype_map(explorer_for(checkpoint))


@shared_cache(maxsize=4, key=canonical)
def query_table_for(checkpoint: str):
    return explorer_for(checkpoint).query_table()


@shared_cache(maxsize=1)
def partner_records() -> list:
    """Partners for patch transfer: real occluded training crops (their occlusion is what gets transferred)."""
    split = load_split("pets09_occ", BENCHMARK)
    return [r for r in split.train if float(r.meta.get("occluded_fraction", 0)) >= 0.15]


def transfer_partners() -> list[str]:
    return [r.path for r in partner_records()]


@shared_cache(maxsize=1)
def benchmark_person_masks() -> PersonMasks | None:
    return PersonMasks.for_root(BENCHMARK)


def partner_source(checkpoint: str) -> str:
    """Where the partners' person masks come from: as in training, the benchmark's silhouettes when the model
    was trained with `aug.saliency_source=auto`, else the model's saliency head."""
    pipeline = explorer_for(checkpoint).pipeline
    auto = pipeline.config.aug.saliency_source == "auto" and benchmark_person_masks() is not None
    return "silhouette" if auto else "head"


@shared_cache(maxsize=4, key=canonical)
def partner_saliency_for(checkpoint: str) -> np.ndarray:
    """Per-patch person maps of the fixed partner pool, computed once per model."""
    pipeline = explorer_for(checkpoint).pipeline
    if partner_source(checkpoint) == "silhouette":
        return pipeline.person_saliency(partner_records(), benchmark_person_masks())
    return pipeline.saliency(transfer_partners())


@shared_cache(maxsize=1)
def occluder_bank() -> dict:
    return {o.name: o for o in load_bank(BENCHMARK / "occluders")}


def warm_up(checkpoint: str) -> None:
    """Fill the slow caches while the first user looks around: the UMAP fit and its numba compilation (~20 s on
    2 cores), placing points in it, and the saliency of the patch-transfer partner pool."""
    points = prototype_map_for(checkpoint)
    points.place(explorer_for(checkpoint).query.features[:2])
    pipeline = explorer_for(checkpoint).pipeline
    if pipeline is not None and pipeline.model.saliency_head is not None:
        partner_saliency_for(checkpoint)


# ----- small helpers ----------------------------------------------------------------------------------------
def query_choices(explorer: BenchmarkExplorer) -> list[tuple[str, int]]:
    """Queries labelled with person, occluder and AP; failures (lowest AP) first."""
    aps = explorer.metrics().ap.tolist()
    order = sorted(range(len(aps)), key=lambda i: (aps[i] if not math.isnan(aps[i]) else 2.0, i))
    labels = []
    for i in order:
        record = explorer.split.query[i]
        labels.append(
            (
                f"AP {aps[i]:.2f} · person {record.pid} · track {record.camid} · "
                f"{record.meta.get('occluder', '?')} {float(record.meta.get('occluded_fraction', 0)):.0%} "
                f"hidden · {Path(record.path).name}",
                i,
            )
        )
    return labels


def new_view(explorer: BenchmarkExplorer, query_index: int | None, image: np.ndarray) -> dict:
    """Per-session view state: small arrays and numbers only (models stay in the caches)."""
    record = explorer.split.query[query_index] if query_index is not None else None
    return {
        "query_index": -1 if query_index is None else int(query_index),
        "clean": image,
        "occluded": None,
        "occlusion": {"method": "none"},
        "pid": None if record is None else record.pid,
        "camid": None if record is None else record.camid,
        "file": Path(record.path).name if record is not None else "uploaded image",
    }


def model_card(checkpoint: str) -> str:
    if checkpoint == HSV:
        return "### HSV colour floor\nPer-stripe HSV histograms, no learning: the floor every model must beat."
    if checkpoint in PEER_CHOICES:
        spec = PEERS[PEER_CHOICES[checkpoint]]
        return (
            f"### {spec.title}\nA pretrained person re-ID network used zero-shot (never trained here), run through "
            f"{spec.runtime}: {spec.params:,} parameters; training data: {spec.trained_on}. It has no mask and no "
            "saliency head: retrieval, the map and the failure table work; the mask, patch transfer and Grad-CAM "
            "need a DPM++ checkpoint."
        )
    return model_card_markdown(checkpoint)


def _image(view: dict, which: str) -> np.ndarray:
    if view is None or view.get("clean") is None:
        raise gr.Error("Pick a query (or upload an image) first.")
    image = view.get(which)
    return view["clean"] if image is None else image


# ----- uploads: checked from their header before anything decodes them -----------------------------------------
def check_encoded(item, max_pixels: int) -> None:
    """Refuse an uploaded image (a FileData, its bytes, or a path) by its header: size and aspect, nothing decoded."""
    try:
        url = getattr(item, "url", None) or ""
        if url.startswith("data:"):
            source = base64.b64decode(url.split(",", 1)[-1], validate=False)
        elif isinstance(item, (bytes, bytearray, str, Path)):
            source = item
        else:
            source = getattr(item, "path", None)
        if source is None:
            raise ImageLoadError("no image was received")
        check_size(*image_size(source), max_pixels=max_pixels)
    except (ImageLoadError, ValueError) as error:
        raise refuse(str(error), error) from error


@contextmanager
def _without_stub_files():
    """Gradio writes a .pyi stub beside every module that defines a component class; these two need none."""
    original = component_meta.create_or_modify_pyi
    component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        yield
    finally:
        component_meta.create_or_modify_pyi = original


with _without_stub_files():

    class CheckedImage(gr.Image):
        """gr.Image whose uploads are refused from their header (pixels, aspect) before the framework decodes them.

        Use with type="filepath" and image_mode=None: the handler then gets the file and decodes it itself.
        """

        is_template = True  # drawn by the frontend's Image

        def preprocess(self, payload):
            if payload is not None:
                check_encoded(payload, MAX_PIXELS)
            return super().preprocess(payload)

    class CheckedImageEditor(gr.ImageEditor):
        """gr.ImageEditor that refuses more than MAX_LAYERS layers, or an image over LAYER_PIXELS, from the headers,
        before the framework decodes any of them; pending uploads of layers are bounded too."""

        is_template = True  # drawn by the frontend's ImageEditor
        MAX_PENDING = 64  # editors whose layers are uploaded but not yet applied

        def preprocess(self, payload):
            if payload is not None:
                parts = self.blob_storage.get(payload.id) if payload.id is not None else payload
                if parts is not None:
                    if len(parts.layers) > MAX_LAYERS:
                        raise gr.Error(f"At most {MAX_LAYERS} paint layers; merge or delete some.")
                    for item in (parts.background, parts.composite, *parts.layers):
                        if item is not None:
                            check_encoded(item, LAYER_PIXELS)
            return super().preprocess(payload)

        @server
        def accept_blobs(self, data):
            index = data.data.get("index")
            if data.data.get("type") == "layer" and index not in (None, "null") and not 0 <= int(index) < MAX_LAYERS:
                raise gr.Error(f"At most {MAX_LAYERS} paint layers; merge or delete some.")
            check_encoded(data.files[0][1], LAYER_PIXELS)
            while len(self.blob_storage) >= self.MAX_PENDING and data.data.get("id") not in self.blob_storage:
                self.blob_storage.pop(next(iter(self.blob_storage)))  # the oldest pending editor
            return super().accept_blobs(data)


# ----- handlers ---------------------------------------------------------------------------------------------
def load_model(checkpoint: str, request: gr.Request | None = None):
    key = checkpoint_for(checkpoint, request)
    try:
        explorer = explorer_for(key)
        card = model_card(key)
    except (CheckpointError, FileNotFoundError, ValueError, OSError) as error:
        raise refuse(f"Could not load {display(key)}: {error}. The previous model stays active.", error) from error
    choices = query_choices(explorer)
    return key, card, gr.update(choices=choices, value=choices[0][1])


@lru_cache(maxsize=256)
def _weights_hash(path: str, size: int, mtime_ns: int) -> str:
    return weights_hash(path)


def listed_weights() -> dict[str, str]:
    """weights hash -> listed checkpoint folder (hashes are computed once per file version)."""
    found = {}
    for folder in checkpoint_choices()[:-1]:
        weights = Path(folder) / "model.safetensors"
        try:
            stat = weights.stat()
            found[_weights_hash(folder, stat.st_size, stat.st_mtime_ns)] = folder
        except OSError:
            continue
    return found


def upload_checkpoint(files, name: str, request: gr.Request | None = None):
    """Save uploaded checkpoint files as a new folder under the checkpoint dir, only if they load as a model, fit the
    quota and are not weights already listed."""
    require_manager(request, "upload checkpoints")
    paths = [Path(f if isinstance(f, (str, Path)) else f.name) for f in (files or [])]
    name = safe_name(clip(name, 64), "uploaded")
    if (Path(SETTINGS["checkpoint_dir"]) / name).exists():
        raise gr.Error(f"{name} already exists; choose another name. Nothing was saved.")
    try:
        check_checkpoint_quota(sum(p.stat().st_size for p in paths))
        weights = next((p for p in paths if p.name == "model.safetensors"), None)
        named_right = {p.name for p in paths} <= set(CHECKPOINT_FILES)  # else install_checkpoint says what is wrong
        twin = listed_weights().get(weights_hash(weights.parent)) if weights and named_right else None
    except OSError as error:
        raise refuse("The uploaded files could not be read. Nothing was saved.", error) from error
    if twin is not None:
        raise gr.Error(f"These weights are already listed as {display(twin)}. Nothing was saved.")
    try:
        target = install_checkpoint(paths, SETTINGS["checkpoint_dir"], name)
    except CheckpointError as error:
        raise refuse(f"Not a usable checkpoint: {error}. Nothing was saved.", error) from error
    return gr.update(choices=checkpoint_choices(), value=str(target)), f"Saved {display(target)}; press Load to use it."


def select_query(checkpoint: str, query_index: int):
    explorer = explorer_for(checkpoint)
    if query_index is None or not 0 <= int(query_index) < len(explorer.split.query):
        raise gr.Error("Pick a query first.")
    image = np.asarray(load_image(explorer.split.query[int(query_index)].path))
    view = new_view(explorer, int(query_index), image)
    return view, enlarge(image), None, f"Query {view['file']}: person {view['pid']}, track {view['camid']}."


def upload_query(checkpoint: str, image):
    """An uploaded crop becomes the session's query: refused from its header when too large or elongated, else
    decoded and scaled down to fit UPLOAD_SIDE before the session keeps it."""
    if image is None:
        raise gr.Error("Upload an image first.")
    try:
        array = np.asarray(load_image(image, max_side=UPLOAD_SIDE))
    except ImageLoadError as error:
        raise refuse(str(error), error) from error
    view = new_view(explorer_for(checkpoint), None, array)
    return view, enlarge(array), None, "Uploaded image: identity unknown, so borders are grey and AP is not defined."


def occlude_transfer(checkpoint: str, view: dict, partner: str, shift: float):
    explorer = explorer_for(checkpoint)
    if explorer.pipeline is None or explorer.pipeline.model.saliency_head is None:
        raise gr.Error("Patch transfer needs a DPM++ checkpoint with a saliency head; load one in the Model tab.")
    clean = _image(view, "clean")
    partners = transfer_partners()
    if partner not in (None, "", "auto") and str(ASSETS.parent / str(partner)) not in partners:
        raise gr.Error(f"Unknown partner {clip(partner)!r}; choose one from the list, or auto.")
    index = None if partner in (None, "", "auto") else partners.index(str(ASSETS.parent / partner))
    result = explorer.pipeline.transfer(
        clean,
        partners,
        partner_index=index,
        shift=None if shift is None or shift < 0 else int(shift),
        candidate_saliency=partner_saliency_for(checkpoint),
    )
    view = {
        **view,
        "occluded": result.image,
        "occlusion": {
            "method": "transfer",
            "partner": str(Path(partners[result.partner_index]).relative_to(ASSETS.parent)),
            "shift": result.shift,
        },
    }
    gallery = [
        (enlarge(heat_overlay(result.anchor, result.anchor_saliency)), "query saliency"),
        (enlarge(mask_overlay(result.anchor, result.anchor_mask)), "query person mask"),
        (
            enlarge(heat_overlay(result.partner, result.partner_saliency)),
            "partner silhouette (background subtraction)"
            if partner_source(checkpoint) == "silhouette"
            else "partner saliency",
        ),
        (enlarge(mask_overlay(result.partner, result.partner_mask)), "partner person mask"),
        (enlarge(result.image), "transferred result"),
    ]
    info = (
        f"Partner `{Path(partners[result.partner_index]).name}`, shift {result.shift} patch columns, "
        f"occlusion-aware IoU {result.oiou:.2f}; {result.occluded_fraction:.0%} of the pixels came from the partner."
    )
    return view, enlarge(result.image), gallery, info


def occlude_paste(view: dict, occluder: str, x: float, y: float, scale: float):
    clean = _image(view, "clean")
    bank = occluder_bank()
    if occluder not in bank:
        raise gr.Error(f"Unknown occluder {clip(occluder)!r}; choose one of {sorted(bank)}.")
    params = PasteParams(occluder, float(x), float(y), float(scale))
    try:
        result = paste(clean, bank[occluder].path, params)
    except ValueError as error:
        raise refuse(str(error), error) from error
    view = {**view, "occluded": np.asarray(result.image), "occlusion": {"method": "paste", **params.to_dict()}}
    return view, enlarge(result.image), f"{occluder} pasted: {result.occluded_fraction:.0%} of the crop covered."


def occlude_paint(view: dict, editor: dict | None, fill: str):
    clean = _image(view, "clean")
    layers = (editor or {}).get("layers") or []
    if not layers:
        raise gr.Error("Paint over the part of the person to hide, then press Apply.")
    if len(layers) > MAX_LAYERS:
        raise gr.Error(f"At most {MAX_LAYERS} paint layers; merge or delete some.")
    if fill not in FILLS:
        raise gr.Error(f"Unknown fill {clip(fill)!r}; choose one of {list(FILLS)}.")
    alpha = np.zeros(clean.shape[:2], bool)
    for layer in layers:
        layer_alpha = load_layer_alpha(layer)
        alpha |= np.asarray(layer_alpha.resize((clean.shape[1], clean.shape[0]), Image.NEAREST)) > 0
    result = paint(clean, alpha, fill)
    view = {
        **view,
        "occluded": np.asarray(result.image),
        "occlusion": {"method": "paint", "fill": fill, "fraction": round(result.occluded_fraction, 4)},
    }
    return view, enlarge(result.image), f"Painted {result.occluded_fraction:.0%} of the crop ({fill})."


def load_layer_alpha(layer) -> Image.Image:
    """The painted (alpha) channel of a layer; a file is refused from its header above LAYER_PIXELS."""
    if isinstance(layer, np.ndarray):
        layer = Image.fromarray(layer)
    if not isinstance(layer, Image.Image):
        check_encoded(layer, LAYER_PIXELS)
        layer = Image.open(layer)
    try:
        check_size(layer.width, layer.height, max_pixels=LAYER_PIXELS)
    except ImageLoadError as error:
        raise refuse(f"paint layer: {error}", error) from error
    return layer.convert("RGBA").getchannel("A")


def editor_background(view: dict):
    if view is None or view.get("clean") is None:
        return None
    return {"background": enlarge(view["clean"]), "layers": [], "composite": None}


def explain(checkpoint: str, view: dict):
    explorer = explorer_for(checkpoint)
    if explorer.pipeline is None:
        raise gr.Error("Grad-CAM needs a DPM++ checkpoint; load one in the Model tab.")
    outputs = []
    for which in ("clean", "occluded"):
        image = view.get(which) if view else None
        if image is None:
            outputs.append(None)
            continue
        result = explorer.pipeline.explain(image, pid=view.get("pid"))
        outputs.append(
            (
                enlarge(heat_overlay(result.image, result.heatmap, 0.45)),
                f"{which}: toward person {result.pid} (similarity {result.similarity:.3f})",
            )
        )
    return [o for o in outputs if o is not None]


def mask_view(checkpoint: str, view: dict, threshold: float):
    explorer = explorer_for(checkpoint)
    if not explorer.has_mask:
        raise gr.Error("This model has no mask (a baseline, a pretrained peer, or model.use_mask=false).")
    clean_image = _image(view, "clean")
    images = [clean_image] + ([view["occluded"]] if view.get("occluded") is not None else [])
    embedded = explorer.embed(images)
    clean_mask = embedded.masks[0]
    occluded_mask = embedded.masks[1] if len(images) > 1 else None
    query_feat, query_mask = embedded.features[-1], embedded.masks[-1]
    counts = f"Active dimensions (mask > {threshold:.2f}): clean {(clean_mask > threshold).sum()} of {len(clean_mask)}"
    if occluded_mask is not None:
        counts += (
            f", occluded {(occluded_mask > threshold).sum()}; mean |difference| "
            f"{np.abs(occluded_mask - clean_mask).mean():.3f}"
        )
    true_feat = wrong_feat = None
    if view.get("pid") is not None:
        ranked = explorer.rank(
            explorer.scores(embedded, True)[-1], view["pid"], view["camid"], top_k=len(explorer.g_pids)
        )
        true = next((i for i in ranked.items if i.correct), None)
        wrong = next((i for i in ranked.items if i.correct is False), None)
        true_feat = explorer.gallery.features[true.gallery_index] if true else None
        wrong_feat = explorer.gallery.features[wrong.gallery_index] if wrong else None
    figure = contributions(query_feat, query_mask, true_feat, wrong_feat)
    return mask_bars(clean_mask, occluded_mask, threshold), counts, figure


def retrieve(checkpoint: str, view: dict, top_k: float, use_mask: bool):
    explorer = explorer_for(checkpoint)
    clean = _image(view, "clean")
    images = [clean] + ([view["occluded"]] if view.get("occluded") is not None else [])
    scores = explorer.scores(explorer.embed(images), use_mask)
    top_k = min(max(int(top_k or 10), 1), 20)  # the slider's range, also for API calls
    results = [explorer.rank(row, view.get("pid"), view.get("camid"), top_k) for row in scores]
    strips, lines = [], []
    before = {i.gallery_index for i in results[0].items}
    for label, image, result in zip(("as given", "with synthetic occlusion"), images, results):
        marks = ["new" if image is not clean and i.gallery_index not in before else "" for i in result.items]
        strips.append(rank_strip(image, [(i.path, i.correct, i.score) for i in result.items], marks=marks))
        ap = "AP n/a (identity unknown)" if math.isnan(result.ap) else f"AP {result.ap:.3f}"
        first = f"first true match at rank {result.first_true_rank}" if result.first_true_rank else "no true match"
        lines.append(f"**{label}**: {ap}, {first if view.get('pid') is not None else 'identity unknown'}")
    if len(results) == 2:
        left = before - {i.gallery_index for i in results[1].items}
        lines.append(f"{len(left)} items left the top-{int(top_k)} after occlusion.")
    hidden = results[0].hidden
    lines.append(f"{hidden} gallery crops of the same person on the same track are hidden (the metric ignores them).")
    return strips[0], strips[1] if len(strips) > 1 else None, "  \n".join(lines)


def umap_view(checkpoint: str, view: dict, colour_by: str):
    points = prototype_map_for(checkpoint)
    trail = None
    if view and view.get("clean") is not None:
        images = [view["clean"], view["occluded"] if view.get("occluded") is not None else view["clean"]]
        trail = points.place(explorer_for(checkpoint).embed(images).features)
    note = f"UMAP (cosine, 15 neighbours, seed 0) of {points.note}."
    gap = explorer_for(checkpoint).prototype_gap()
    if gap is not None:
        note += (
            f" The prototypes (stars) sit apart from the image features: a gallery feature's mean cosine to its "
            f"own prototype is {gap['own']:.2f}, to the other prototypes {gap['others']:.2f}, while two "
            f"prototypes have a mean cosine of {gap['between_prototypes']:.2f}. Matching needs only the angles "
            "between features and prototypes, so the map keeps the prototypes in their own corner."
        )
    figure = umap_figure(points, colour_by, trail)
    thumbs = [f"/gradio_api/file={path}" if path else "" for path in points.paths]
    return {"version": time.time_ns(), "figure": figure.to_json(), "thumbs": thumbs}, note


def umap_select(checkpoint: str, value: dict | None):
    """A click on the map lists the point's nearest neighbours; a lasso or box selection lists what it holds."""
    event = (value or {}).get("event") or {}
    points = prototype_map_for(checkpoint)

    def item(row: int, extra: str = ""):
        label = f"{points.kind[row]} · person {points.pid[row]}{extra}"
        path = points.paths[row]
        return (path, label) if path else None

    count = len(points.paths)
    if event.get("type") == "click":
        row = int(event.get("point", -1))
        if not 0 <= row < count:
            raise gr.Error("Click a point of the map.")
        found = [item(i, f" · cos {score:.2f}") for i, score in points.neighbours(row)]
        items = [x for x in [item(row, " · clicked")] + found if x is not None]
        return (
            items,
            f"Nearest neighbours of {points.kind[row]} {points.index[row]} (person {points.pid[row]}), "
            "by cosine in the prototype space.",
        )
    if event.get("type") == "select":
        rows = list(dict.fromkeys(int(r) for r in (event.get("points") or []) if 0 <= int(r) < count))
        persons = np.unique(points.pid[rows], return_counts=True) if rows else ([], [])
        counts = ", ".join(f"person {p}: {c}" for p, c in zip(*persons))
        pictured = [r for r in rows if points.paths[r]]  # prototypes have no image
        items = [item(r) for r in pictured[:60]]
        shown = f" (showing the first {len(items)})" if len(pictured) > 60 else ""
        unpictured = len(rows) - len(pictured)
        without = f"; {unpictured} are prototypes, which have no image" if unpictured else ""
        return items, f"{len(rows)} points selected{shown}{without}. {counts}"
    raise gr.Error("Click a point, or select points with the lasso or box tool.")


def failures(checkpoint: str, occluder: str, min_occluded: float, only_failures: bool):
    explorer = explorer_for(checkpoint)
    table = query_table_for(checkpoint)
    if occluder and occluder != "all":
        table = table[table["occluder"] == occluder]
    table = table[table["occluded"] >= float(min_occluded)]
    if only_failures:
        table = table[table["first true rank"] != 1]
    table = table.sort_values("AP", kind="stable")
    curves = {"mask on": explorer.metrics(True).cmc.tolist()}
    if explorer.has_mask:
        curves["mask off"] = explorer.metrics(False).cmc.tolist()
    return table, cmc_figure(curves), occlusion_bins_figure(explorer.by_occlusion())


def open_failure(checkpoint: str, table, event: gr.SelectData):
    row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
    query_index = int(table.iloc[row]["query"])
    return (gr.update(value=query_index), *select_query(checkpoint, query_index))


EXPORTS = {"folder": None, "age_s": 600.0}  # one folder of case files per server; a file lives 10 minutes


def export_folder() -> Path:
    """This server's folder of exported case files, removed when the server exits; entries older than
    EXPORTS["age_s"] are deleted at each export (the browser's download is served from Gradio's own copy)."""
    if EXPORTS["folder"] is None or not Path(EXPORTS["folder"]).is_dir():
        EXPORTS["folder"] = tempfile.mkdtemp(prefix="dpmpp_cases_")
        atexit.register(shutil.rmtree, EXPORTS["folder"], True)
    folder = Path(EXPORTS["folder"])
    cutoff = time.time() - EXPORTS["age_s"]
    for entry in folder.iterdir():
        if entry.stat().st_mtime <= cutoff:
            shutil.rmtree(entry, ignore_errors=True)
    return folder


def export_case(checkpoint: str, view: dict, top_k: float, use_mask: bool):
    checkpoint_hash = "" if checkpoint in BASELINES else weights_hash(checkpoint)
    image = _image(view, "occluded")
    top_k = min(max(int(top_k or 10), 1), 20)
    case = build_case(explorer_for(checkpoint), view, image, checkpoint, checkpoint_hash, top_k, use_mask)
    path = export_folder() / uuid.uuid4().hex / f"case_{safe_name(view['file'].rsplit('.', 1)[0], 'query')}.json"
    path.parent.mkdir()
    write_text(path, case.to_json())
    return str(path)


def import_case(checkpoint: str, file):
    if file is None:
        raise gr.Error("Choose a case file (.json) exported from this app.")
    try:
        case = read_case(file if isinstance(file, (str, Path)) else file.name)
    except CaseError as error:
        raise gr.Error(str(error)) from error
    if case.query_index < 0:
        raise gr.Error("This case was made from an uploaded image, which the case file does not contain.")
    notes = []
    if case.checkpoint_hash and checkpoint not in BASELINES and weights_hash(checkpoint) != case.checkpoint_hash:
        notes.append(
            f"Note: the case was made with {case.checkpoint} ({case.checkpoint_hash}); another model is "
            "loaded, so scores differ."
        )
    view, shown, _, _ = select_query(checkpoint, case.query_index)
    method = case.occlusion.get("method", "none")
    if method == "transfer":
        view, shown, _, _ = occlude_transfer(checkpoint, view, case.occlusion["partner"], case.occlusion["shift"])
    elif method == "paste":
        o = case.occlusion
        view, shown, _ = occlude_paste(view, o["occluder"], o["x"], o["y"], o["scale"])
    elif method == "paint":
        notes.append("Painted regions are not stored in case files; showing the clean query.")
    notes.insert(0, f"Loaded case: query {case.query_file}, occlusion {method}.")
    return gr.update(value=case.query_index), view, shown, case.top_k, case.use_mask, " ".join(notes)


def start_training(
    dataset: str,
    root: str,
    preset: str,
    epochs: float,
    name: str,
    switches: list[str],
    request: gr.Request | None = None,
):
    require_manager(request, "start trainings")
    check_checkpoint_quota(TRAINING_RESERVE_MB << 20)
    try:
        config = training_config(dataset, str(root or ""), preset, epochs, switches or [], SETTINGS["data_root"])
        out_dir = Path(SETTINGS["checkpoint_dir"]) / safe_name(clip(name, 64), "app_run")
        status = JOBS.start(config, out_dir, owner=session_of(request))
    except (ValueError, RuntimeError) as error:
        raise refuse(str(error), error) from error
    return status_text(status)


def status_text(status) -> str:
    if status.state == "idle":
        return "No training job has run in this server yet."
    eta = f", ETA {status.eta_s / 60:.1f} min" if status.state == "running" else ""
    speed = f", {status.images_per_s:.0f} images/s" if status.images_per_s else ""
    return public(f"**{status.state}** ({display(status.out_dir)}): {status.message}{speed}{eta}")


@lru_cache(maxsize=2)
def _status_view(jobs: int, version: int):
    """Text and loss figure of one version of the job's status, drawn once however many sessions poll it."""
    status = JOBS.status()
    return status_text(status), loss_figure(status.history[-2000:])


def training_status():
    text, figure = _status_view(id(JOBS), JOBS.status().version)
    return text, figure, gr.update(choices=checkpoint_choices())


def stop_training(request: gr.Request | None = None):
    try:
        return status_text(JOBS.stop(requester=session_of(request), override=is_teacher(request)))
    except StopRefused as error:
        raise gr.Error(f"Not stopped: {error}.") from error


def teacher_login(token: str, request: gr.Request | None = None):
    """The teacher's token unlocks training, uploads, other folders and stopping any training for this session."""
    given = str(token or "").strip()
    if not given or not secrets.compare_digest(given.encode(), SETTINGS["teacher_token"].encode()):
        raise gr.Error("That is not the teacher token printed when the server started.")
    if session_of(request) is not None:
        TEACHER_SESSIONS.add(session_of(request))
    return role_note(request), ""


def role_note(request: gr.Request | None = None) -> str:
    if not SETTINGS["classroom"]:
        return ""
    if is_teacher(request):
        return "**Classroom mode, teacher**: training, uploads and every folder are open to this session."
    return (
        "**Classroom mode**: query, occlude, inspect, compare and export freely. Training, uploading checkpoints and "
        "loading unlisted folders are for the teacher."
    )


def expire_idle_sessions(state_holder, idle_s: float, now: datetime.datetime | None = None) -> list[str]:
    """Drop every session unused for `idle_s` seconds, with everything it held (its view, images, chosen model);
    returns their ids. A visitor who comes back starts from the default view."""
    now = now or datetime.datetime.now()
    with state_holder.lock:
        idle = [s for s, used in list(state_holder.time_last_used.items()) if (now - used).total_seconds() > idle_s]
        for session in idle:
            state_holder.session_data.pop(session, None)
            state_holder.time_last_used.pop(session, None)
    TEACHER_SESSIONS.difference_update(idle)
    if idle:
        logger.info("dropped %d idle sessions", len(idle))
    return idle


def expire_sessions_forever(demo: gr.Blocks) -> None:
    idle_s = float(SETTINGS["idle_minutes"]) * 60
    while True:
        time.sleep(max(5.0, min(60.0, idle_s / 4)))
        if getattr(demo, "state_holder", None) is not None:
            expire_idle_sessions(demo.state_holder, idle_s)


class UploadQuota:
    """ASGI middleware: refuses uploads (HTTP 507) while the files visitors have uploaded, and that the cache has not
    yet deleted, fill `quota_bytes`; the total is recounted at most every few seconds."""

    def __init__(self, app, demo: gr.Blocks, quota_bytes: int) -> None:
        self.app, self.demo, self.quota = app, demo, quota_bytes
        self._used, self._counted = 0, 0.0

    def used(self) -> int:
        if time.monotonic() - self._counted > 2.0:
            total = 0
            for name in list(getattr(self.demo, "upload_file_set", ())):
                try:
                    total += os.stat(name).st_size
                except OSError:
                    continue
            self._used, self._counted = total, time.monotonic()
        return self._used

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/upload"):
            length = dict(scope.get("headers") or []).get(b"content-length", b"0")
            incoming = int(length) if length.isdigit() else 0
            if self.used() + incoming > self.quota:
                response = PlainTextResponse("The server's upload space is full; try again later.", status_code=507)
                await response(scope, receive, send)
                return
            self._used += incoming  # counted until the next recount finds the file itself
        await self.app(scope, receive, send)


# ----- layout -----------------------------------------------------------------------------------------------
def start_checkpoint(checkpoint: str | None = None) -> str:
    """The checkpoint loaded first, resolved: `checkpoint`, else the bundled model, else the HSV floor."""
    if checkpoint is None:
        checkpoint = str(DEFAULT_CHECKPOINT) if (DEFAULT_CHECKPOINT / "model.safetensors").is_file() else HSV
    return canonical(checkpoint)[0]


def build_demo(checkpoint: str | None = None) -> gr.Blocks:
    start = start_checkpoint(checkpoint)
    choices = query_choices(explorer_for(start))
    with gr.Blocks(
        title="dpmpp — occluded re-ID explorer",
        analytics_enabled=False,
        delete_cache=(600, 3600),  # uploads and produced files are deleted an hour after they were written
    ) as demo:
        model = gr.State(start)
        view = gr.State(None)
        gr.Markdown("# dpmpp — occluded person re-identification, seen through DPM++'s masked metric")
        gr.Markdown(ABOUT)
        role = gr.Markdown(role_note(), elem_id="role_note")
        with gr.Tab("Model"):
            with gr.Row():
                checkpoint_box = gr.Dropdown(
                    checkpoint_choices(),
                    value=start,
                    label="checkpoint",
                    allow_custom_value=True,
                    elem_id="checkpoint",
                    scale=4,
                )
                load_button = gr.Button("Load", elem_id="load_model", scale=1)
            with gr.Accordion("Upload a checkpoint", open=False):
                with gr.Row():
                    upload_files = gr.File(
                        file_count="multiple",
                        label="config.json, model.safetensors, ...",
                        file_types=[".json", ".safetensors"],
                    )
                    upload_name = gr.Textbox(value="uploaded", label="folder name")
                upload_button = gr.Button("Save checkpoint", elem_id="upload_checkpoint")
                upload_note = gr.Markdown(elem_id="upload_note")
            card = gr.Markdown(model_card(start), elem_id="model_card")
            with gr.Accordion("Teacher", open=False, visible=bool(SETTINGS["classroom"])):
                with gr.Row():
                    token = gr.Textbox(label="teacher token (printed when the server started)", type="password")
                    token_button = gr.Button("Unlock", elem_id="teacher_login")
            with gr.Accordion("Train a model", open=False):
                with gr.Row():
                    dataset = gr.Dropdown(
                        ["pets09_occ"] + [n for n in dataset_names() if not n.startswith("pets09")],
                        value="pets09_occ",
                        label="dataset",
                    )
                    root = gr.Textbox(label="folder under --data-root (own datasets)", value="")
                    preset = gr.Dropdown(preset_names(), value="tiny", label="preset")
                    epochs = gr.Number(value=30, precision=0, minimum=1, maximum=MAX_EPOCHS, label="epochs (stage 2)")
                    name = gr.Textbox(value="my_run", label="checkpoint name")
                switches = gr.CheckboxGroup(
                    COMPONENTS,
                    value=list(COMPONENTS),
                    label="components",
                    info="Class-ignoring follows the preset (auto): it acts only where the learnt saliency head, "
                    "not the benchmark's person silhouettes, guides patch transfer.",
                )
                with gr.Row():
                    train_button = gr.Button("Start training", variant="primary", elem_id="train")
                    stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
                job_status = gr.Markdown(status_text(JOBS.status()), elem_id="job_status")
                loss_plot = gr.Plot(label="losses and accuracy")
        with gr.Tab("Query & occlude"):
            gr.Markdown(EXPLAIN_OCCLUDE)
            with gr.Row():
                query = gr.Dropdown(
                    choices, value=choices[0][1], label="benchmark query (failures first)", elem_id="query", scale=4
                )
                upload = CheckedImage(
                    type="filepath", image_mode=None, label="or upload a person crop", height=160, scale=1
                )
            with gr.Row():
                clean_image = gr.Image(label="query", height=280, interactive=False, elem_id="clean_image")
                occluded_image = gr.Image(
                    label="occluded query", height=280, interactive=False, elem_id="occluded_image"
                )
            info = gr.Markdown(elem_id="occlusion_info")
            with gr.Tab("Patch transfer"):
                with gr.Row():
                    partner = gr.Dropdown(
                        ["auto"] + [str(Path(p).relative_to(ASSETS.parent)) for p in transfer_partners()],
                        value="auto",
                        label="partner (auto: best occlusion-aware IoU)",
                    )
                    shift = gr.Number(value=-1, precision=0, label="shift in patch columns (-1: best)")
                transfer_button = gr.Button("Transfer", elem_id="occlude_transfer")
                transfer_steps = gr.Gallery(
                    label="saliency and person masks", columns=5, height=300, object_fit="contain"
                )
            with gr.Tab("Paste an occluder"):
                with gr.Row():
                    occluder = gr.Dropdown(sorted(occluder_bank()), value="sign", label="occluder (real crops)")
                    x = gr.Slider(0, 1, value=0.5, step=0.01, label="x (centre)")
                    y = gr.Slider(0, 1, value=0.5, step=0.01, label="y (centre)")
                    scale = gr.Slider(0.05, 1.5, value=0.3, step=0.01, label="scale (height / crop height)")
                paste_button = gr.Button("Paste", elem_id="occlude_paste")
            with gr.Tab("Paint"):
                editor = CheckedImageEditor(type="pil", label="paint the region to hide", height=300)
                with gr.Row():
                    fill = gr.Radio(["grey", "black", "blur", "noise"], value="grey", label="fill")
                    paint_button = gr.Button("Apply", elem_id="occlude_paint")
            with gr.Accordion("Grad-CAM toward the matched prototype", open=False):
                explain_button = gr.Button("Explain", elem_id="explain")
                cams = gr.Gallery(columns=2, height=300, label="Grad-CAM", object_fit="contain")
        with gr.Tab("Mask"):
            gr.Markdown(EXPLAIN_MASK)
            threshold = gr.Slider(0, 1, value=0.5, step=0.01, label="threshold for 'active'")
            mask_button = gr.Button("Show mask", elem_id="mask")
            mask_plot = gr.Plot(label="mask over prototype dimensions")
            mask_counts = gr.Markdown(elem_id="mask_counts")
            contribution_plot = gr.Plot(label="per-dimension contributions: first true match vs top wrong match")
        with gr.Tab("Retrieval"):
            gr.Markdown(EXPLAIN_RETRIEVAL)
            with gr.Row():
                top_k = gr.Slider(1, 20, value=10, step=1, label="top-k")
                use_mask = gr.Checkbox(value=True, label="masked metric (off: plain cosine)")
                retrieve_button = gr.Button("Retrieve", variant="primary", elem_id="retrieve")
            clean_strip = gr.Image(label="query as given", type="pil", elem_id="clean_strip")
            occluded_strip = gr.Image(label="query with your synthetic occlusion", type="pil", elem_id="occluded_strip")
            summary = gr.Markdown(elem_id="summary")
        with gr.Tab("Prototype space"):
            colour_by = gr.Radio(["identity", "correctness", "occlusion"], value="identity", label="colour by")
            umap_button = gr.Button("Draw map", elem_id="umap")
            umap_canvas = gr.HTML(value=None, html_template=UMAP_TEMPLATE, js_on_load=UMAP_JS, elem_id="umap_canvas")
            umap_note = gr.Markdown(elem_id="umap_note")
            umap_grid = gr.Gallery(
                label="linked grid: nearest neighbours of a click, or the lasso's points",
                columns=12,
                height=300,
                object_fit="contain",
                elem_id="umap_grid",
            )
            umap_grid_note = gr.Markdown(elem_id="umap_grid_note")
        with gr.Tab("Failures"):
            gr.Markdown(EXPLAIN_METRIC)
            with gr.Row():
                occluder_filter = gr.Dropdown(
                    ["all", "person", "pole", "sign", "border"], value="all", label="occluder"
                )
                min_occluded = gr.Slider(0, 1, value=0, step=0.05, label="min occluded fraction")
                only_failures = gr.Checkbox(value=False, label="only rank-1 failures")
                failures_button = gr.Button("Refresh", elem_id="failures")
            table = gr.Dataframe(interactive=False, elem_id="failure_table", max_height=360)
            with gr.Row():
                cmc_plot = gr.Plot(label="CMC")
                bins_plot = gr.Plot(label="rank-1 and mAP by occlusion")
            with gr.Row():
                export_button = gr.Button("Export this case", elem_id="export_case")
                case_file = gr.File(label="case file (JSON)", file_types=[".json"], elem_id="case_file")
                import_button = gr.Button("Import case", elem_id="import_case")
            case_note = gr.Markdown(elem_id="case_note")

        retrieval = dict(
            fn=retrieve, inputs=[model, view, top_k, use_mask], outputs=[clean_strip, occluded_strip, summary]
        )
        hidden = {"api_visibility": "undocumented"}  # follow-up steps of a named event, not API endpoints of their own
        refresh_views = {**retrieval, **hidden}
        retrieve_button.click(api_name="retrieve", **retrieval)  # first, so that it owns the name /retrieve
        load_button.click(load_model, checkpoint_box, [model, card, query], api_name="load_model")
        token_button.click(teacher_login, token, [role, token], api_name="teacher_login")
        upload_button.click(
            upload_checkpoint, [upload_files, upload_name], [checkpoint_box, upload_note], api_name="upload_checkpoint"
        )
        query.input(
            select_query, [model, query], [view, clean_image, occluded_image, info], api_name="select_query"
        ).then(**refresh_views).then(editor_background, view, editor, **hidden)
        upload.upload(
            upload_query, [model, upload], [view, clean_image, occluded_image, info], api_name="upload_query"
        ).then(**refresh_views).then(editor_background, view, editor, **hidden)
        transfer_button.click(
            occlude_transfer,
            [model, view, partner, shift],
            [view, occluded_image, transfer_steps, info],
            api_name="occlude_transfer",
        ).then(**refresh_views)
        paste_button.click(
            occlude_paste, [view, occluder, x, y, scale], [view, occluded_image, info], api_name="occlude_paste"
        ).then(**refresh_views)
        paint_button.click(
            occlude_paint, [view, editor, fill], [view, occluded_image, info], api_name="occlude_paint"
        ).then(**refresh_views)
        explain_button.click(explain, [model, view], cams, api_name="explain")
        mask_button.click(
            mask_view, [model, view, threshold], [mask_plot, mask_counts, contribution_plot], api_name="mask"
        )
        threshold.release(mask_view, [model, view, threshold], [mask_plot, mask_counts, contribution_plot], **hidden)
        use_mask.change(**refresh_views)
        umap_button.click(umap_view, [model, view, colour_by], [umap_canvas, umap_note], api_name="umap")
        umap_canvas.submit(umap_select, [model, umap_canvas], [umap_grid, umap_grid_note], api_name="umap_select")
        failures_button.click(
            failures,
            [model, occluder_filter, min_occluded, only_failures],
            [table, cmc_plot, bins_plot],
            api_name="failures",
        )
        table.select(open_failure, [model, table], [query, view, clean_image, occluded_image, info], **hidden)
        export_button.click(export_case, [model, view, top_k, use_mask], case_file, api_name="export_case")
        import_button.click(
            import_case,
            [model, case_file],
            [query, view, occluded_image, top_k, use_mask, case_note],
            api_name="import_case",
        ).then(**refresh_views)
        train_button.click(
            start_training, [dataset, root, preset, epochs, name, switches], job_status, api_name="train"
        )
        stop_button.click(stop_training, None, job_status, api_name="stop_training")
        gr.Timer(2.0).tick(training_status, None, [job_status, loss_plot, checkpoint_box], api_name="train_status")
        demo.load(select_query, [model, query], [view, clean_image, occluded_image, info], **hidden).then(
            **refresh_views
        )
        demo.load(role_note, None, role, **hidden)
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    parser.add_argument(
        "--classroom",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="students may not train, upload checkpoints or load unlisted folders (default: on for any --host "
        "other than loopback)",
    )
    parser.add_argument("--idle-minutes", type=float, default=30.0, help="drop a session unused this long")
    parser.add_argument("--queue-size", type=int, default=64, help="requests waiting at most; more are refused")
    parser.add_argument("--checkpoint-quota-mb", type=int, default=2048, help="size limit of --checkpoint-dir")
    parser.add_argument("--upload-quota-mb", type=int, default=1024, help="visitors' uploads kept at one time")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder to load first (default: bundled)")
    parser.add_argument("--checkpoint-dir", default=str(CHECKPOINTS), help="folder of checkpoints to offer")
    parser.add_argument("--data-root", default=None, help="folder holding your own datasets (for training)")
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public share link (off by default)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    SETTINGS["checkpoint_dir"] = Path(args.checkpoint_dir).resolve()
    SETTINGS["data_root"] = args.data_root
    SETTINGS["classroom"] = args.classroom if args.classroom is not None else not is_loopback(args.host)
    SETTINGS["idle_minutes"] = args.idle_minutes
    SETTINGS["checkpoint_quota_mb"], SETTINGS["upload_quota_mb"] = args.checkpoint_quota_mb, args.upload_quota_mb
    SETTINGS["start"] = start = start_checkpoint(args.checkpoint)
    demo = build_demo(start)
    threading.Thread(target=warm_up, args=(start,), daemon=True).start()
    threading.Thread(target=expire_sessions_forever, args=(demo,), daemon=True).start()
    mode = "classroom mode" if SETTINGS["classroom"] else "open mode (every visitor may train and upload)"
    print(  # the console is the teacher's: the token is shown nowhere else
        f"dpmpp app, {mode}. Teacher: http://{args.host}:{args.port}/?teacher={SETTINGS['teacher_token']}",
        flush=True,
    )
    demo.queue(max_size=args.queue_size, default_concurrency_limit=4).launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        allowed_paths=[str(ASSETS), str(PLOTLY_JS)],
        head=f'<script src="/gradio_api/file={PLOTLY_JS}"></script>',
        max_file_size="20mb",
        show_error=False,  # unexpected errors are logged here; visitors see a plain "Error"
        app_kwargs={"middleware": [Middleware(UploadQuota, demo=demo, quota_bytes=args.upload_quota_mb << 20)]},
    )


if __name__ == "__main__":
    main()
