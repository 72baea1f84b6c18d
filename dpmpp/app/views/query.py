"""The Query & occlude tab: pick a benchmark query or upload a crop, occlude it (`occlude`), Grad-CAM."""

from __future__ import annotations

import math
from pathlib import Path

import gradio as gr
import numpy as np

from dpmpp.api import ImageLoadError, load_image
from dpmpp.app import state
from dpmpp.app.common import HIDDEN, PHOTO, clip, on_query_change, refuse, view_header, view_image
from dpmpp.app.views import occlude
from dpmpp.app.widgets import UPLOAD_SIDE, CheckedImage
from dpmpp.explorer import BenchmarkExplorer, prototype_persons
from dpmpp.viz.overlays import enlarge, heat_panel

EXPLAIN = (
    "**Occlude the query** three ways. *Patch transfer* (SPT) keeps the query's own pixels where a partner's "
    "person is visible and copies the partner's background and occluders everywhere else. The query inherits a "
    "real occlusion pattern. The partner is the one whose visible silhouette the query's silhouette covers best "
    "(occlusion-aware IoU, over horizontal shifts). *Paste* puts a real occluder from the scene on the query. "
    "*Paint* covers the region you draw."
)


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


def select_query(checkpoint: str, query_index: int):
    explorer = state.explorer_for(checkpoint)
    if query_index is None:
        raise gr.Error("Pick a query first.")
    if not 0 <= int(query_index) < len(explorer.split.query):
        count = len(explorer.split.query)
        raise gr.Error(f"There is no query {int(query_index)}: the benchmark has {count} (0 to {count - 1}).")
    image = np.asarray(load_image(explorer.split.query[int(query_index)].path))
    explorer.remember_query(image, int(query_index))  # retrieval and mask need not embed it again
    view = new_view(explorer, int(query_index), image)
    return view, enlarge(image), None, f"Query {view['file']}: person {view['pid']}, track {view['camid']}."


def still_active(view: dict | None) -> str:
    """Which query stays active after a refused upload, in words."""
    if not view or view.get("clean") is None:
        return "No query is active yet: pick one from the list."
    person = f", person {view['pid']}" if view.get("pid") is not None else ""
    return f"The query is still `{clip(str(view.get('file', 'the previous image')))}`{person}."


def step_query(checkpoint: str, view: dict | None, direction: int):
    """The next (+1) or previous (-1) query in the list's order (failures first), wrapping around; from an upload or
    no query, the first."""
    order = [index for _, index in query_choices(state.explorer_for(checkpoint))]
    current = (view or {}).get("query_index", -1)
    target = order[(order.index(current) + direction) % len(order)] if current in order else order[0]
    return (gr.update(value=target), *select_query(checkpoint, target))


def next_query(checkpoint: str, view: dict | None):
    return step_query(checkpoint, view, +1)


def previous_query(checkpoint: str, view: dict | None):
    return step_query(checkpoint, view, -1)


def upload_query(checkpoint: str, image, view: dict | None = None):
    """An uploaded crop becomes the session's query: refused from its header when too large or elongated, else
    decoded and scaled down to fit UPLOAD_SIDE before the session keeps it."""
    if image is None:
        raise gr.Error("Upload an image first.")
    try:
        array = np.asarray(load_image(image, max_side=UPLOAD_SIDE))
    except ImageLoadError as error:
        raise refuse(f"{error}. {still_active(view)}", error) from error
    view = {**new_view(state.explorer_for(checkpoint), None, array), "file": clip(Path(str(image)).name)}
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


GRADCAM_NOTE = (
    "Warm colours mark the pixels that raise the image's similarity to the named person's prototype most "
    "(Grad-CAM, scaled to 0–1 per image). *Similarity* is the cosine between the image's (masked) feature and "
    "that prototype, in −1…1; it is low for every prototype here because prototypes sit apart from the image "
    "features (see Prototype space), so compare it between the clean and occluded query, not with 1."
)


def explain(checkpoint: str, view: dict):
    explorer = state.explorer_for(checkpoint)
    if not explorer.can_explain:
        raise gr.Error("Grad-CAM needs a DPM++ checkpoint; load one in the Model tab.")
    view_image(view, "clean")
    persons = prototype_persons(explorer)
    own = next((model_pid for model_pid, person in persons.items() if person == view.get("pid")), None)
    items, lines = [], []
    for which in ("clean", "occluded"):
        image = view.get(which)
        if image is None:
            continue
        result = explorer.explain(image, pid=own)
        person = persons.get(result.pid)
        name = f"person {person}" if person is not None else f"training identity {result.pid}"
        items.append((result.image, result.heatmap, f"{which}\ntoward {name}"))
        lines.append(
            f"**{which}**: similarity {result.similarity:.3f} = cosine of this image's feature to {name}'s prototype"
        )
    if own is None:
        lines.insert(0, "The query's person has no prototype in this model: shown toward the best-matching prototype.")
    return heat_panel(items), "  \n".join(lines + [GRADCAM_NOTE])


def build(ui) -> None:
    choices = query_choices(state.explorer_for(ui.start))
    with gr.Tab("Query & occlude"):
        ui.query_header = gr.Markdown(elem_id="query_header")
        gr.Markdown(EXPLAIN)
        with gr.Row():
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
        ui.info = gr.Markdown(elem_id="occlusion_info")
        ui.shown = [ui.view, ui.clean_image, ui.occluded_image, ui.info]  # what picking a query sets
        occlude.build(ui)
        with gr.Accordion("Grad-CAM toward the matched prototype", open=False):
            ui.explain_button = gr.Button("Explain", elem_id="explain")
            ui.cams = gr.Image(label="Grad-CAM", type="pil", height=340, interactive=False, elem_id="gradcam", **PHOTO)
            ui.cams_note = gr.Markdown(elem_id="gradcam_note")


def wire(ui) -> None:
    ui.query.input(select_query, [ui.model, ui.query], ui.shown, api_name="select_query").then(**ui.refresh).then(
        occlude.editor_background, ui.view, ui.editor, **HIDDEN
    )
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
