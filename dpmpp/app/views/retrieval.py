"""The Retrieval tab: the top-k of the query as given and as occluded, side by side. Every change of the query
refreshes it (`ui.refresh`)."""

from __future__ import annotations

import math

import gradio as gr
import numpy as np

from dpmpp.app import state
from dpmpp.app.common import HIDDEN, PHOTO, on_query_change, view_header, view_image
from dpmpp.viz.rank_strip import caption_size, preload, rank_strip

EXPLAIN = (
    "Blue: the query. Green: the same person, red: another person (grey: identity unknown). Gallery crops of the "
    "same person *and* the same track are hidden, as in the metric. Finding the same track again is tracking, "
    "not re-identification. AP is the query's average precision over the whole gallery. *new* marks an item that "
    "entered the top-k after occlusion. Under each crop: its rank, its score and, for a wrong match, who it is."
)


STRIP_CROP = (128, 256)  # each crop in the strip, before the page scales the strip to the panel's width


def warm(checkpoint: str) -> int:
    """Before a class: the gallery crops the benchmark's own rankings show first (rank 1 of every query, then rank
    2, ...) read into the strips' cache, and their captions rendered. Returns the number of crops read."""
    explorer = state.explorer_for(checkpoint)
    order = np.argsort(-explorer.similarity(), axis=1, kind="stable")[:, :10].T.ravel()
    paths = [explorer.split.gallery[i].path for i in order]
    return preload(paths, STRIP_CROP, caption_size(STRIP_CROP), sorted({int(p) for p in explorer.g_pids}))


def top_k_of(top_k) -> int:
    """The slider's range, also for API calls."""
    return min(max(int(top_k or 10), 1), 20)


def strip_items(result) -> list[tuple]:
    """(path, correct, score, who) per ranked item: a wrong match names its person."""
    return [(i.path, i.correct, i.score, f"P{i.pid:02d}" if i.correct is False else "") for i in result.items]


def retrieve(checkpoint: str, view: dict, top_k: float, use_mask: bool):
    explorer = state.explorer_of(checkpoint, view)
    clean = view_image(view, "clean")
    images = [clean] + ([view["occluded"]] if view.get("occluded") is not None else [])
    scores = explorer.scores(explorer.embed(images), use_mask)
    top_k = top_k_of(top_k)
    results = [explorer.rank(row, view.get("pid"), view.get("camid"), top_k) for row in scores]
    strips, lines = [], []
    before = {i.gallery_index for i in results[0].items}
    for label, image, result in zip(("as given", "with synthetic occlusion"), images, results):
        marks = ["new" if image is not clean and i.gallery_index not in before else "" for i in result.items]
        strips.append(rank_strip(image, strip_items(result), size=STRIP_CROP, marks=marks))
        ap = "AP n/a (identity unknown)" if math.isnan(result.ap) else f"AP {result.ap:.3f}"
        first = f"first true match at rank {result.first_true_rank}" if result.first_true_rank else "no true match"
        lines.append(f"**{label}**: {ap}, {first if view.get('pid') is not None else 'identity unknown'}")
    if len(results) == 2:
        left = before - {i.gallery_index for i in results[1].items}
        lines.append(f"{len(left)} items left the top-{int(top_k)} after occlusion.")
    hidden = results[0].hidden
    lines.append(f"{hidden} gallery crops of the same person on the same track are hidden (the metric ignores them).")
    return strips[0], strips[1] if len(strips) > 1 else None, "  \n".join(lines)


def build(ui) -> None:
    with gr.Tab("Retrieval"):
        ui.retrieval_header = gr.Markdown(elem_id="retrieval_header")
        gr.Markdown(EXPLAIN, elem_classes=["explain"])
        with gr.Row():
            ui.top_k = gr.Slider(1, 20, value=10, step=1, label="top-k")
            ui.use_mask = gr.Checkbox(value=True, label="masked metric (off: plain cosine)")
            ui.retrieve_button = gr.Button("Retrieve", variant="primary", elem_id="retrieve")
        ui.clean_strip = gr.Image(label="query as given", type="pil", elem_id="clean_strip", **PHOTO)
        ui.occluded_strip = gr.Image(
            label="query with your synthetic occlusion", type="pil", elem_id="occluded_strip", **PHOTO
        )
        ui.summary = gr.Markdown(elem_id="summary")


def wire(ui) -> None:
    """Wired before the other views: the button owns the name /retrieve; `ui.refresh` is the follow-up step that
    other views' events end with."""
    retrieval = dict(
        fn=retrieve,
        inputs=[ui.model, ui.view, ui.top_k, ui.use_mask],
        outputs=[ui.clean_strip, ui.occluded_strip, ui.summary],
    )
    ui.retrieve_button.click(api_name="retrieve", **retrieval)
    ui.refresh = {**retrieval, **HIDDEN}
    ui.use_mask.change(**ui.refresh)
    on_query_change(ui, view_header, [ui.retrieval_header])
