"""Which query: a benchmark, then one of its queries, from the list (failures, the lowest AP, first), by stepping
through it, or by picture; each choice becomes the session's view."""

from __future__ import annotations

import math
import re
from pathlib import Path

import gradio as gr
import numpy as np

from dpmpp.api import load_image
from dpmpp.app import state
from dpmpp.app.common import clip
from dpmpp.explorer import BenchmarkExplorer
from dpmpp.viz.overlays import enlarge


def query_order(explorer: BenchmarkExplorer) -> list[int]:
    """The benchmark's query numbers, failures (lowest AP) first."""
    aps = explorer.metrics().ap.tolist()
    return sorted(range(len(aps)), key=lambda i: (aps[i] if not math.isnan(aps[i]) else 2.0, i))


def query_label(explorer: BenchmarkExplorer, index: int) -> str:
    """A query in a few words: AP, person, track or camera, occluder, file."""
    record, ap = explorer.split.query[index], float(explorer.metrics().ap[index])
    where = (
        f"track {record.camid}"
        if explorer.split.camid_is_track
        else f"camera {'AB'[record.camid] if record.camid < 2 else record.camid}"
    )
    occluder = record.meta.get("occluder_kind") or record.meta.get("occluder")
    hidden = f" · {occluder} {float(record.meta.get('occluded_fraction', 0)):.0%} hidden" if occluder else ""
    return f"AP {ap:.2f} · person {record.pid} · {where}{hidden} · {Path(record.path).name}"


def query_choices(explorer: BenchmarkExplorer) -> list[tuple[str, int]]:
    """Queries labelled with person, occluder and AP; failures (lowest AP) first."""
    return [(query_label(explorer, i), i) for i in query_order(explorer)]


THUMBNAILS = 96  # pictures in the picker at once; a filter narrows the rest down


def query_thumbnails(checkpoint: str, text: str, only_failures: bool, view: dict | None):
    """The session's benchmark's queries as pictures, failures (lowest AP) first: those whose label holds `text` as
    a phrase of whole words (e.g. "pole", "person 3", "camera A"), and only rank-1 misses if asked.
    Returns (gallery items, a note, the query number of each item)."""
    explorer = state.explorer_of(checkpoint, view)
    phrase = " ".join(clip(text or "", 60).lower().split())
    pattern = re.compile(rf"(?<![\w.]){re.escape(phrase)}(?![\w.])") if phrase else None
    ranks, aps = explorer.metrics().first_true_rank, explorer.metrics().ap
    found = [
        index
        for index in query_order(explorer)
        if not (only_failures and ranks[index] == 1)
        and (pattern is None or pattern.search(query_label(explorer, index).lower()))
    ]
    shown = found[:THUMBNAILS]
    items = [(explorer.split.query[i].path, f"#{i} AP {aps[i]:.2f}") for i in shown]
    benchmark = state.benchmark_of(view)
    if not found:
        return (
            [],
            f'No query of {benchmark} matches: try a person ("person 3") or an occluder.',
            pictured(benchmark, []),
        )
    more = f"; the first {THUMBNAILS} are shown, narrow the filter for the rest" if len(found) > THUMBNAILS else ""
    note = f"{len(found)} queries of {benchmark}, failures first{more}. Click one to open it."
    return items, note, pictured(benchmark, shown)


def pictured(benchmark: str, queries: list[int]) -> dict:
    """What a page keeps of the pictures it shows: their benchmark and query numbers (`pick_thumbnail`)."""
    return {"benchmark": benchmark, "queries": [int(q) for q in queries]}


def pick_thumbnail(checkpoint: str, shown: dict | None, view: dict | None, event: gr.SelectData):
    """A click on a picture opens its query; pictures of another benchmark than the session's are refused, since a
    query number means another person there."""
    index = event.index if isinstance(event.index, int) else event.index[0]
    queries = (shown or {}).get("queries") or []
    if not 0 <= int(index) < len(queries) or (shown or {}).get("benchmark") != state.benchmark_of(view):
        raise gr.Error("These pictures are out of date (another benchmark or list): refresh them.")
    query_index = int(queries[int(index)])
    return (gr.update(value=query_index), *select_query(checkpoint, query_index, view))


def new_view(explorer: BenchmarkExplorer, query_index: int | None, image: np.ndarray, benchmark: str) -> dict:
    """Per-session view state: small arrays and numbers only (models stay in the caches). `benchmark` names the
    benchmark whose query numbers and gallery the view uses."""
    record = explorer.split.query[query_index] if query_index is not None else None
    return {
        "benchmark": benchmark,
        "query_index": -1 if query_index is None else int(query_index),
        "clean": image,
        "occluded": None,
        "occlusion": {"method": "none"},
        "pid": None if record is None else record.pid,
        "camid": None if record is None else record.camid,
        "file": Path(record.path).name if record is not None else "uploaded image",
    }


def select_query(checkpoint: str, query_index: int, view: dict | None = None, benchmark: str | None = None):
    """Query `query_index` of `benchmark` (default: the benchmark of the session's `view`) becomes the query."""
    benchmark = state.benchmark_name(benchmark) if benchmark else state.benchmark_of(view)
    explorer = state.explorer_for(checkpoint, benchmark)
    if query_index is None:
        raise gr.Error("Pick a query first.")
    if not 0 <= int(query_index) < len(explorer.split.query):
        count = len(explorer.split.query)
        raise gr.Error(f"There is no query {int(query_index)}: the benchmark has {count} (0 to {count - 1}).")
    image = np.asarray(load_image(explorer.split.query[int(query_index)].path))
    explorer.remember_query(image, int(query_index))  # retrieval and mask need not embed it again
    view = new_view(explorer, int(query_index), image, benchmark)
    return (
        view,
        enlarge(image),
        None,
        f"Query {view['file']} of {benchmark}: {query_label(explorer, int(query_index))}.",
    )


def open_benchmark(checkpoint: str, benchmark: str, progress) -> tuple[BenchmarkExplorer, list[tuple[str, int]]]:
    """`checkpoint` on `benchmark`, in steps named on the progress bar (a model's first use reads its weights and
    embeds the benchmark; the embeddings are kept on disk, so a later start reads them): its explorer and its
    queries, failures first."""
    progress(0.05, desc=f"Reading {state.option_name(checkpoint)} and {benchmark}")
    state.model_for(checkpoint)
    state.benchmark_split(benchmark)
    progress(0.3, desc=f"Embedding {benchmark} (read from disk if this model embedded it before)")
    explorer = state.explorer_for(checkpoint, benchmark)
    progress(0.9, desc="Ranking the queries")
    return explorer, query_choices(explorer)


def switch_benchmark(
    checkpoint: str,
    benchmark: str,
    progress=gr.Progress(),  # noqa: B008 - how Gradio asks for a progress bar
):
    """Another benchmark: its queries in the list (failures first), and its first one as the query."""
    benchmark = state.benchmark_name(benchmark)
    _, choices = open_benchmark(checkpoint, benchmark, progress)
    first = choices[0][1]
    return (gr.update(choices=choices, value=first), *select_query(checkpoint, first, benchmark=benchmark))


def first_query(checkpoint: str, query_index: int, benchmark: str):
    """A page opens on the listed query of the benchmark shown first."""
    return select_query(checkpoint, query_index, benchmark=benchmark)


def step_query(checkpoint: str, view: dict | None, direction: int):
    """The next (+1) or previous (-1) query in the list's order (failures first), wrapping around; from an upload or
    no query, the first."""
    order = query_order(state.explorer_of(checkpoint, view))
    current = (view or {}).get("query_index", -1)
    target = order[(order.index(current) + direction) % len(order)] if current in order else order[0]
    return (gr.update(value=target), *select_query(checkpoint, target, view))


def next_query(checkpoint: str, view: dict | None):
    return step_query(checkpoint, view, +1)


def previous_query(checkpoint: str, view: dict | None):
    return step_query(checkpoint, view, -1)
