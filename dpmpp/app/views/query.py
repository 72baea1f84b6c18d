"""The Query & occlude tab: pick a benchmark and a query (`picker`) or upload a crop, occlude it (`occlude`),
Grad-CAM (`gradcam`)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np

from dpmpp.api import ImageLoadError, load_image
from dpmpp.app import state
from dpmpp.app.common import HIDDEN, PHOTO, clip, on_query_change, refuse, view_header
from dpmpp.app.views import occlude
from dpmpp.app.views.gradcam import explain
from dpmpp.app.views.picker import (
    new_view,
    next_query,
    pick_thumbnail,
    previous_query,
    query_choices,
    query_thumbnails,
    select_query,
    switch_benchmark,
)
from dpmpp.app.widgets import UPLOAD_SIDE, CheckedImage
from dpmpp.viz.overlays import enlarge

EXPLAIN = (
    "**Occlude the query** three ways. *Patch transfer* (SPT) keeps the query's own pixels where a partner's "
    "person is visible and copies the partner's background and occluders everywhere else. The query inherits a "
    "real occlusion pattern. The partner is the one whose visible silhouette the query's silhouette covers best "
    "(occlusion-aware IoU, over horizontal shifts). *Paste* puts a real occluder from the scene on the query. "
    "*Paint* covers the region you draw."
)


def still_active(view: dict | None) -> str:
    """Which query stays active after a refused upload, in words."""
    if not view or view.get("clean") is None:
        return "No query is active yet: pick one from the list."
    person = f", person {view['pid']}" if view.get("pid") is not None else ""
    return f"The query is still `{clip(str(view.get('file', 'the previous image')))}`{person}."


def upload_query(checkpoint: str, image, view: dict | None = None):
    """An uploaded crop becomes the session's query: refused from its header when too large or elongated, else
    decoded and scaled down to fit UPLOAD_SIDE before the session keeps it."""
    if image is None:
        raise gr.Error("Upload an image first.")
    try:
        array = np.asarray(load_image(image, max_side=UPLOAD_SIDE))
    except ImageLoadError as error:
        raise refuse(f"{error}. {still_active(view)}", error) from error
    benchmark = state.benchmark_of(view)
    view = {
        **new_view(state.explorer_for(checkpoint, benchmark), None, array, benchmark),
        "file": clip(Path(str(image)).name),
    }
    return (
        view,
        enlarge(array),
        None,
        f"Uploaded image `{view['file']}`: identity unknown, so borders are grey and AP is not defined.",
    )


def query_cleared(checkpoint: str, view: dict):
    """A new query, occlusion or model: the header says which; Grad-CAM goes, and the transfer steps unless they
    are this occlusion's."""
    method = ((view or {}).get("occlusion") or {}).get("method")
    steps = gr.update() if method == "transfer" else None
    return view_header(checkpoint, view), None, "", steps


def build(ui) -> None:
    choices = query_choices(state.explorer_for(ui.start, ui.benchmarks[0]))
    with gr.Tab("Query & occlude"):
        ui.query_header = gr.Markdown(elem_id="query_header")
        gr.Markdown(EXPLAIN, elem_classes=["explain"])
        with gr.Row():
            ui.benchmark = gr.Dropdown(
                [(f"{name}: {about}", name) for name, (_, about) in state.BENCHMARKS.items() if name in ui.benchmarks],
                value=ui.benchmarks[0],
                label="benchmark",
                elem_id="benchmark",
                scale=3,
            )
            ui.query = gr.Dropdown(
                choices, value=choices[0][1], label="benchmark query (failures first)", elem_id="query", scale=4
            )
            with gr.Column(scale=1, min_width=120):
                ui.previous_query = gr.Button("◀ previous (p)", size="sm", elem_id="previous_query")
                ui.next_query = gr.Button("next (n) ▶", size="sm", elem_id="next_query")
            ui.upload = CheckedImage(
                type="filepath", image_mode=None, label="or upload a person crop", height=160, scale=1
            )
        with gr.Row():
            ui.clean_image = gr.Image(label="query", height=280, interactive=False, elem_id="clean_image", **PHOTO)
            ui.occluded_image = gr.Image(
                label="occluded query", height=280, interactive=False, elem_id="occluded_image", **PHOTO
            )
        with gr.Accordion("Pick by picture", open=False, elem_id="picker") as ui.picker:
            with gr.Row():
                ui.thumb_filter = gr.Textbox(
                    value="", label="filter (a phrase of the labels: person 3, pole, camera A)", scale=3, max_length=60
                )
                ui.thumb_failures = gr.Checkbox(value=False, label="only rank-1 misses", scale=1)
                ui.thumb_button = gr.Button("Show", scale=1, elem_id="show_thumbnails")
            ui.thumb_note = gr.Markdown(elem_id="thumbnail_note")
            ui.thumbs = gr.Gallery(
                columns=10,
                height=330,
                object_fit="contain",
                allow_preview=False,
                elem_id="thumbnails",
                show_label=False,
            )
            ui.thumbs_shown = gr.State(None)  # `picker.pictured`: the pictures' benchmark and query numbers
        ui.info = gr.Markdown(elem_id="occlusion_info")
        ui.shown = [ui.view, ui.clean_image, ui.occluded_image, ui.info]  # what picking a query sets
        occlude.build(ui)
        with gr.Accordion("Grad-CAM toward the matched prototype", open=False):
            ui.explain_button = gr.Button("Explain", elem_id="explain")
            ui.cams = gr.Image(label="Grad-CAM", type="pil", height=340, interactive=False, elem_id="gradcam", **PHOTO)
            ui.cams_note = gr.Markdown(elem_id="gradcam_note")


def wire(ui) -> None:
    ui.query.input(select_query, [ui.model, ui.query, ui.view], ui.shown, api_name="select_query").then(
        **ui.refresh
    ).then(occlude.editor_background, ui.view, ui.editor, **HIDDEN)
    thumbnails = dict(
        fn=query_thumbnails,
        inputs=[ui.model, ui.thumb_filter, ui.thumb_failures, ui.view],
        outputs=[ui.thumbs, ui.thumb_note, ui.thumbs_shown],
    )
    ui.thumb_button.click(**thumbnails, api_name="query_thumbnails")
    ui.thumb_filter.submit(**thumbnails, **HIDDEN)
    ui.picker.expand(**thumbnails, **HIDDEN)
    ui.thumbs.select(pick_thumbnail, [ui.model, ui.thumbs_shown, ui.view], [ui.query, *ui.shown], **HIDDEN).then(
        **ui.refresh
    ).then(occlude.editor_background, ui.view, ui.editor, **HIDDEN)
    ui.benchmark.input(
        switch_benchmark, [ui.model, ui.benchmark], [ui.query, *ui.shown], api_name="switch_benchmark"
    ).then(**ui.refresh).then(occlude.editor_background, ui.view, ui.editor, **HIDDEN).then(**thumbnails, **HIDDEN)
    for button, step in ((ui.next_query, next_query), (ui.previous_query, previous_query)):
        button.click(step, [ui.model, ui.view], [ui.query, *ui.shown], **HIDDEN).then(**ui.refresh).then(
            occlude.editor_background, ui.view, ui.editor, **HIDDEN
        )
    ui.upload.upload(upload_query, [ui.model, ui.upload, ui.view], ui.shown, api_name="upload_query").then(
        **ui.refresh
    ).then(occlude.editor_background, ui.view, ui.editor, **HIDDEN)
    occlude.wire(ui)
    ui.explain_button.click(explain, [ui.model, ui.view], [ui.cams, ui.cams_note], api_name="explain")
    on_query_change(ui, query_cleared, [ui.query_header, ui.cams, ui.cams_note, ui.transfer_steps])
