"""The Query & occlude tab: pick a benchmark query or upload a crop, occlude it (`occlude`), Grad-CAM."""

from __future__ import annotations

import math
import re
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


def query_order(explorer: BenchmarkExplorer) -> list[int]:
    """The benchmark's query numbers, failures (lowest AP) first."""
    aps = explorer.metrics().ap.tolist()
    return sorted(range(len(aps)), key=lambda i: (aps[i] if not math.isnan(aps[i]) else 2.0, i))


def query_label(explorer: BenchmarkExplorer, index: int) -> str:
    """A query in a few words: AP, person, track or camera, occluder, file."""
    record, ap = explorer.split.query[index], float(explorer.metrics().ap[index])
    where = (
        f"track {record.camid}"
        if "frame" in record.meta
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
    if not found:
        return [], f'No query of {state.benchmark_of(view)} matches: try a person ("person 3") or an occluder.', []
    more = f"; the first {THUMBNAILS} are shown, narrow the filter for the rest" if len(found) > THUMBNAILS else ""
    return (
        items,
        f"{len(found)} queries of {state.benchmark_of(view)}, failures first{more}. Click one to open it.",
        shown,
    )


def pick_thumbnail(checkpoint: str, shown: list[int] | None, view: dict | None, event: gr.SelectData):
    """A click on a picture opens its query."""
    index = event.index if isinstance(event.index, int) else event.index[0]
    if not shown or not 0 <= int(index) < len(shown):
        raise gr.Error("Refresh the pictures: the list changed.")
    query_index = int(shown[int(index)])
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


def switch_benchmark(checkpoint: str, benchmark: str, progress=gr.Progress()):  # noqa: B008 - how Gradio asks for a progress bar
    """Another benchmark: its queries in the list (failures first), and its first one as the query."""
    benchmark = state.benchmark_name(benchmark)
    progress(0.05, desc=f"Reading {benchmark}")
    state.benchmark_split(benchmark)
    progress(0.2, desc=f"Embedding {benchmark} (read from disk if this model embedded it before)")
    explorer = state.explorer_for(checkpoint, benchmark)
    progress(0.9, desc="Ranking the queries")
    choices = query_choices(explorer)
    first = choices[0][1]
    return (gr.update(choices=choices, value=first), *select_query(checkpoint, first, benchmark=benchmark))


def first_query(checkpoint: str, query_index: int, benchmark: str):
    """A page opens on the listed query of the benchmark shown first."""
    return select_query(checkpoint, query_index, benchmark=benchmark)


def still_active(view: dict | None) -> str:
    """Which query stays active after a refused upload, in words."""
    if not view or view.get("clean") is None:
        return "No query is active yet: pick one from the list."
    person = f", person {view['pid']}" if view.get("pid") is not None else ""
    return f"The query is still `{clip(str(view.get('file', 'the previous image')))}`{person}."


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


GRADCAM_NOTE = (
    "Warm colours mark the pixels that raise the image's similarity to the named person's prototype most "
    "(Grad-CAM, scaled to 0–1 per image). *Similarity* is the cosine between the image's (masked) feature and "
    "that prototype, in −1…1; it is low for every prototype here because prototypes sit apart from the image "
    "features (see Prototype space), so compare it between the clean and occluded query, not with 1."
)


def explain(checkpoint: str, view: dict):
    explorer = state.explorer_of(checkpoint, view)
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
                    label="filter (a phrase of the labels: person 3, pole, camera A)", scale=3, max_length=60
                )
                ui.thumb_failures = gr.Checkbox(value=False, label="only rank-1 misses", scale=1)
                ui.thumb_button = gr.Button("Show", scale=1, elem_id="show_thumbnails")
            ui.thumb_note = gr.Markdown(elem_id="thumbnail_note")
            ui.thumbs = gr.Gallery(
                columns=12,
                height=330,
                object_fit="contain",
                allow_preview=False,
                elem_id="thumbnails",
                show_label=False,
            )
            ui.thumb_indices = gr.State([])
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
        outputs=[ui.thumbs, ui.thumb_note, ui.thumb_indices],
    )
    ui.thumb_button.click(**thumbnails, api_name="query_thumbnails")
    ui.thumb_filter.submit(**thumbnails, **HIDDEN)
    ui.picker.expand(**thumbnails, **HIDDEN)
    ui.thumbs.select(pick_thumbnail, [ui.model, ui.thumb_indices, ui.view], [ui.query, *ui.shown], **HIDDEN).then(
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
