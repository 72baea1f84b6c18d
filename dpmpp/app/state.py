"""What sessions share: the listed checkpoints, the training job, the disk quota, and the heavy objects (explorer,
map, failure table, patch-transfer partners) cached per checkpoint and computed once however many sessions ask."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np

from dpmpp.api import (
    ASSETS,
    DEFAULT_CHECKPOINT,
    PEERS,
    PeerUnavailable,
    PersonMasks,
    Pipeline,
    TrainingJobs,
    load_bank,
    load_peer,
    load_split,
    shared_cache,
)
from dpmpp.app.classroom import may_manage
from dpmpp.app.common import SETTINGS, clip, display, refuse
from dpmpp.explorer import BenchmarkExplorer, build_prototype_map, transfer_partners

BENCHMARK = ASSETS / "pets09_occ"  # the scene of the occluder bank and the patch-transfer partners
# The benchmarks a visitor can switch between: name -> (folder, what the page says of it)
BENCHMARKS = {
    "pets09_occ": (BENCHMARK, "PETS09 S2.L1, 10 persons, real occlusions (213 queries, 754 gallery crops)"),
    "cuhk01_occ": (
        ASSETS / "cuhk01",
        "CUHK01 test split 0, 486 persons, synthetic occluders on camera A (972 queries, 972 camera B crops)",
    ),
    "cuhk01": (ASSETS / "cuhk01", "CUHK01 test split 0, 486 persons, clean (972 camera A queries, 972 camera B)"),
}
DEFAULT_BENCHMARK = "pets09_occ"
HSV = "HSV colour floor (no model)"
PEER_CHOICES = {f"{spec.title}, zero-shot (pretrained peer)": name for name, spec in PEERS.items()}
BASELINES = {HSV, *PEER_CHOICES}  # models without a checkpoint folder: listed by name
JOBS = TrainingJobs()
TRAINING_RESERVE_MB = 100  # what one training may write (weights, resumable state, metrics)


# ----- the checkpoint folder -------------------------------------------------------------------------------------
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


def checkpoint_choices() -> list[str]:
    """The listed checkpoints: the start checkpoint and every folder with weights in the checkpoint folder."""
    folder = Path(SETTINGS["checkpoint_dir"]).resolve()
    found = [p.parent for p in folder.glob("*/model.safetensors")] if folder.is_dir() else []
    listed = {str(p) for p in found if not p.name.startswith(".")}  # not an upload's staging folder
    if SETTINGS["start"] is not None and SETTINGS["start"] not in BASELINES:
        listed.add(str(Path(SETTINGS["start"]).resolve()))
    return sorted(listed) + [HSV, *PEER_CHOICES]


def checkpoint_options() -> list[tuple[str, str]]:
    """The listed checkpoints as (label, value) for a dropdown: folders named relative to the checkpoint folder, in
    the label and in the value, so that neither the page nor its config shows the server's paths
    (`checkpoint_for` maps a name back to its folder)."""
    return [(option_name(c), option_name(c)) for c in checkpoint_choices()]


def option_name(checkpoint: str) -> str:
    """What a dropdown shows and sends for a listed checkpoint."""
    return checkpoint if checkpoint in BASELINES else display(checkpoint)


def canonical(checkpoint: str | None) -> tuple[str]:
    """One cache key per folder, however it is spelled (`ckpt/`, `//ckpt`, `ckpt/.`); None is the default."""
    if checkpoint in BASELINES:
        return (checkpoint,)
    return (str(Path(DEFAULT_CHECKPOINT if checkpoint is None else checkpoint).resolve()),)


def benchmark_name(benchmark: str | None) -> str:
    """A known benchmark's name (None: the default); anything else is refused in plain words."""
    benchmark = DEFAULT_BENCHMARK if benchmark in (None, "") else str(benchmark)
    if benchmark not in BENCHMARKS:
        raise gr.Error(f"Unknown benchmark {clip(benchmark)!r}; the app offers {', '.join(BENCHMARKS)}.")
    return benchmark


def model_on(checkpoint: str | None, benchmark: str | None = None) -> tuple[str, str]:
    """The cache key of a model on a benchmark: (resolved checkpoint, benchmark name)."""
    return canonical(checkpoint)[0], benchmark_name(benchmark)


def benchmark_of(view: dict | None) -> str:
    """The benchmark a session's view belongs to (its queries' numbers and its gallery): the default before any."""
    return benchmark_name((view or {}).get("benchmark"))


def start_checkpoint(checkpoint: str | None = None) -> str:
    """The checkpoint loaded first, resolved: `checkpoint`, else the bundled model, else the HSV floor."""
    if checkpoint is None:
        checkpoint = str(DEFAULT_CHECKPOINT) if (DEFAULT_CHECKPOINT / "model.safetensors").is_file() else HSV
    return canonical(checkpoint)[0]


def checkpoint_for(text, request: gr.Request | None = None) -> str:
    """The folder a visitor asked for, resolved (a name is looked up in the checkpoint folder).

    In classroom mode a student gets the same answer for every unlisted folder, whether it exists or not.
    """
    text = "" if text is None else str(text).strip()
    if text in BASELINES:
        return text
    listed = {option_name(c): c for c in reversed(checkpoint_choices())}  # the first listed wins a shared name
    if text in listed:
        return listed[text]
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


# ----- cached heavy objects (keyed by checkpoint, shared by all sessions) -------------------------------------
@shared_cache(maxsize=len(BENCHMARKS), key=lambda benchmark=None: (benchmark_name(benchmark),))
def benchmark_split(benchmark: str = DEFAULT_BENCHMARK):
    """A benchmark of the app, read (and its table logged) once."""
    return load_split(benchmark, BENCHMARKS[benchmark][0])


@shared_cache(maxsize=4, key=canonical)
def model_for(checkpoint: str):
    """The model behind a listed name, loaded once for every benchmark: a Pipeline, a peer's embedder, or None
    (the HSV floor)."""
    if checkpoint in PEER_CHOICES:
        try:
            return load_peer(PEER_CHOICES[checkpoint])
        except PeerUnavailable as error:
            raise refuse(str(error), error) from error
    if checkpoint == HSV:
        return None
    return Pipeline.from_checkpoint(checkpoint, device="cpu", inference_threads=SETTINGS["inference_threads"])


@shared_cache(maxsize=6, key=model_on)
def explorer_for(checkpoint: str, benchmark: str = DEFAULT_BENCHMARK) -> BenchmarkExplorer:
    """A model on a benchmark: its embedded gallery and queries, metrics and rankings."""
    split, model = benchmark_split(benchmark), model_for(checkpoint)
    if checkpoint in PEER_CHOICES:
        return BenchmarkExplorer(split, embedder=model)
    return BenchmarkExplorer(split, model)


def explorer_of(checkpoint: str, view: dict | None) -> BenchmarkExplorer:
    """The explorer of a session's model on the benchmark of its view."""
    return explorer_for(checkpoint, benchmark_of(view))


@shared_cache(maxsize=6, key=model_on)
def prototype_map_for(checkpoint: str, benchmark: str = DEFAULT_BENCHMARK):
    return build_prototype_map(explorer_for(checkpoint, benchmark))


@shared_cache(maxsize=6, key=model_on)
def query_table_for(checkpoint: str, benchmark: str = DEFAULT_BENCHMARK):
    return explorer_for(checkpoint, benchmark).query_table()


@shared_cache(maxsize=1)
def partner_records() -> list:
    """Partners for patch transfer: the benchmark's real occluded training crops."""
    return transfer_partners(benchmark_split())


@shared_cache(maxsize=1)
def benchmark_person_masks() -> PersonMasks | None:
    return PersonMasks.for_root(BENCHMARK)


@shared_cache(maxsize=4, key=canonical)
def partner_saliency_for(checkpoint: str) -> np.ndarray:
    """Per-patch person maps of the fixed partner pool, computed once per model."""
    return explorer_for(checkpoint).partner_saliency(partner_records(), benchmark_person_masks())


@shared_cache(maxsize=1)
def occluder_bank() -> dict:
    return {o.name: o for o in load_bank(BENCHMARK / "occluders")}


def warm_up(checkpoint: str, benchmarks: tuple[str, ...] = (DEFAULT_BENCHMARK,)) -> None:
    """Fill the slow caches while the first user looks around: the UMAP fit and its numba compilation (~20 s on
    2 cores), placing points in it, and the saliency of the patch-transfer partner pool; then the other
    `benchmarks`' embeddings (kept on disk per checkpoint, so only a model's first start pays for them)."""
    points = prototype_map_for(checkpoint)
    points.place(explorer_for(checkpoint).query.features[:2])
    if explorer_for(checkpoint).has_saliency:
        partner_saliency_for(checkpoint)
    for benchmark in benchmarks:
        explorer_for(checkpoint, benchmark).metrics()
