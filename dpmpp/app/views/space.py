"""The Prototype space tab: a UMAP of prototypes, gallery and queries with the query's trail, and a linked grid."""

from __future__ import annotations

import time

import gradio as gr
import numpy as np

from dpmpp.app import state
from dpmpp.app.common import HIDDEN, clip, occlusion_text, on_query_change, view_header
from dpmpp.app.map_page import UMAP_JS, UMAP_TEMPLATE
from dpmpp.viz.umap_plot import umap_figure


def person_to_highlight(text, view: dict | None) -> int | None:
    """The highlight box: empty for none, "query" for the query's person, else a person id."""
    text = str(text or "").strip().lower()
    if not text:
        return None
    if text == "query":
        return (view or {}).get("pid")
    if not text.removeprefix("person").strip().isdigit():
        raise gr.Error(f"Highlight takes a person id (e.g. 3), 'query', or nothing; got {clip(text)!r}.")
    return int(text.removeprefix("person").strip())


def umap_view(checkpoint: str, view: dict, colour_by: str, highlight: str = "", progress=gr.Progress()):  # noqa: B008
    benchmark = state.benchmark_of(view)
    person = person_to_highlight(highlight, view)
    progress(0.1, desc=f"Fitting the map of {benchmark} (once per model and benchmark, about 20 s)")
    points, explorer = state.prototype_map_for(checkpoint, benchmark), state.explorer_for(checkpoint, benchmark)
    progress(0.8, desc="Placing the query and drawing")
    trail = None
    if view and view.get("clean") is not None:
        images = [view["clean"], view["occluded"] if view.get("occluded") is not None else view["clean"]]
        trail = points.place(explorer.embed(images).features)
    note = f"UMAP (cosine, 15 neighbours, seed 0) of {points.note}."
    if trail is not None:
        note = f"Trail: {view['file']}, clean → {occlusion_text(view)}. " + note
    gap = explorer.prototype_gap()
    if gap is not None:
        note += (
            f" The prototypes sit apart from the image features: a gallery feature's mean cosine to its "
            f"own prototype is {gap['own']:.2f}, to the other prototypes {gap['others']:.2f}, while two "
            f"prototypes have a mean cosine of {gap['between_prototypes']:.2f}. UMAP puts them all in one corner "
            "of their own, so each star is drawn at the mean map position of its 10 nearest image features "
            "(by cosine), not where UMAP put it."
        )
    elif explorer.can_explain:
        note += (
            f" The persons of {benchmark} are not training identities of this model: none has a prototype, so the "
            "map shows no star of theirs (the title counts the training prototypes left out)."
        )
    figure = umap_figure(points, colour_by, trail, person)
    thumbs = [f"/gradio_api/file={path}" if path else "" for path in points.paths]
    return {"version": time.time_ns(), "benchmark": benchmark, "figure": figure.to_json(), "thumbs": thumbs}, note


def umap_select(checkpoint: str, value: dict | None, view: dict | None = None):
    """A click on the map lists the point's nearest neighbours; a lasso or box selection lists what it holds."""
    event = (value or {}).get("event") or {}
    benchmark = state.benchmark_name(str((value or {}).get("benchmark") or state.benchmark_of(view)))
    points = state.prototype_map_for(checkpoint, benchmark)  # the benchmark of the map on the page

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
        if not rows:
            return [], (
                "Nothing selectable in this selection: only gallery, query and prototype points are listed "
                "(the clean → occluded trail and the legend are not)."
            )
        persons = np.unique(points.pid[rows], return_counts=True) if rows else ([], [])
        counts = ", ".join(f"person {p}: {c}" for p, c in zip(*persons))
        pictured = [r for r in rows if points.paths[r]]  # prototypes have no image
        items = [item(r) for r in pictured[:60]]
        shown = f" (showing the first {len(items)})" if len(pictured) > 60 else ""
        unpictured = len(rows) - len(pictured)
        without = f"; {unpictured} are prototypes, which have no image" if unpictured else ""
        return items, f"{len(rows)} points selected{shown}{without}. {counts}"
    raise gr.Error("Click a point, or select points with the lasso or box tool.")


def space_header(checkpoint: str, view: dict) -> str:
    return view_header(checkpoint, view) + " · the trail shows it once you press **Draw map**."


def build(ui) -> None:
    with gr.Tab("Prototype space"):
        ui.space_header = gr.Markdown(elem_id="space_header")
        with gr.Row():
            ui.colour_by = gr.Radio(
                ["identity", "correctness", "occlusion"], value="identity", label="colour by", scale=2
            )
            ui.highlight = gr.Textbox(
                value="", label="highlight a person (an id, or 'query' for the query's person)", max_length=20, scale=1
            )
        ui.umap_button = gr.Button("Draw map", elem_id="umap")
        ui.umap_canvas = gr.HTML(value=None, html_template=UMAP_TEMPLATE, js_on_load=UMAP_JS, elem_id="umap_canvas")
        ui.umap_note = gr.Markdown(elem_id="umap_note")
        ui.umap_grid = gr.Gallery(
            label="linked grid: nearest neighbours of a click, or the lasso's points",
            columns=12,
            height=300,
            object_fit="contain",
            elem_id="umap_grid",
        )
        ui.umap_grid_note = gr.Markdown(elem_id="umap_grid_note")


def wire(ui) -> None:
    drawing = dict(
        fn=umap_view, inputs=[ui.model, ui.view, ui.colour_by, ui.highlight], outputs=[ui.umap_canvas, ui.umap_note]
    )
    ui.umap_button.click(**drawing, api_name="umap")
    ui.highlight.submit(**drawing, **HIDDEN)
    ui.umap_canvas.submit(
        umap_select, [ui.model, ui.umap_canvas, ui.view], [ui.umap_grid, ui.umap_grid_note], api_name="umap_select"
    )
    on_query_change(ui, space_header, [ui.space_header])
