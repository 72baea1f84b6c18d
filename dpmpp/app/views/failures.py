"""The Failures tab: every query in a filterable table (a selected row opens it), CMC and occlusion bins, and the
case files (`cases`) below."""

from __future__ import annotations

import gradio as gr
import numpy as np

from dpmpp.app import state
from dpmpp.app.common import HIDDEN, on_query_change, public, view_header
from dpmpp.app.views import cases, occlude
from dpmpp.app.views.picker import pick_thumbnail, pictured, select_query
from dpmpp.viz.curves import cmc_figure, occlusion_bins_figure

EXPLAIN = (
    "Rank-1: share of queries whose best match is correct. mAP: mean of the per-query average precision. "
    "ΔAP clean→occluded compares each query with its clean counterpart, the same person on the same track a few "
    "frames away, unoccluded. *top match* is the identity of the best gallery crop; *occluding person* is the "
    "identity of the person in front, for a query hidden behind another person. When the two agree on a miss, the "
    "model recognised the occluder instead of the person. On cuhk01_occ the clean counterpart is the query's own "
    "image before the synthetic occluder was pasted. Pick a **model B** to add its AP and rank and to filter the "
    "queries where exactly one of the two is right at rank 1."
)
NO_B = "none"
FAILURE_PICTURES = 48  # the table's first rows as pictures, in its order
AGREEMENT = ("all", "A right, B wrong", "A wrong, B right", "both right", "both wrong")


def versus(table, explorer_a, explorer_b):
    """`table` with model B's AP, first true rank and the rank-1 agreement of A and B per query; the counts."""
    ranks_a, metrics_b = explorer_a.metrics().first_true_rank, explorer_b.metrics()
    right_a, right_b = ranks_a == 1, metrics_b.first_true_rank == 1
    words = np.where(
        right_a,
        np.where(right_b, "both right", "A right, B wrong"),
        np.where(right_b, "A wrong, B right", "both wrong"),
    )
    table = table.copy()
    rows = table["query"].to_numpy()
    table["B AP"] = np.round(metrics_b.ap[rows], 4)
    table["B first true rank"] = metrics_b.first_true_rank[rows]
    table["A vs B"] = words[rows]
    counts = {word: int((words == word).sum()) for word in AGREEMENT[1:]}
    return table, counts


def failures(
    checkpoint: str,
    occluder: str,
    min_occluded: float,
    only_failures: bool,
    model_b: str = NO_B,
    agreement: str = "all",
    view: dict | None = None,
    request: gr.Request | None = None,
):
    """The session's benchmark (that of its view) under the session's model: the filtered table, CMC and bins; with
    a model B, its columns and the rank-1 agreement of the two."""
    benchmark = state.benchmark_of(view)
    explorer = state.explorer_for(checkpoint, benchmark)
    table = state.query_table_for(checkpoint, benchmark)
    note = f"{benchmark}: {len(table)} queries. Select a row to open that query."
    if model_b and model_b != NO_B:
        other = state.checkpoint_for(model_b, request)
        table, counts = versus(table, explorer, state.explorer_for(other, benchmark))
        note = (
            f"{benchmark}, A = {state.option_name(checkpoint)}, B = {state.option_name(other)}: "
            + ", ".join(f"{word} {count}" for word, count in counts.items())
            + ". Select a row to open that query."
        )
        if agreement in AGREEMENT[1:]:
            table = table[table["A vs B"] == agreement]
    if occluder and occluder != "all":
        table = table[table["occluder"] == occluder]
    table = table[table["occluded"] >= float(min_occluded)]
    if only_failures:
        table = table[table["first true rank"] != 1]
    table = table.sort_values("AP", kind="stable")
    curves = {"mask on": explorer.metrics(True).cmc.tolist()}
    if explorer.has_mask:
        curves["mask off"] = explorer.metrics(False).cmc.tolist()
    shown = [int(q) for q in table["query"].head(FAILURE_PICTURES)]
    pictures = [(explorer.split.query[q].path, f"#{q} AP {explorer.metrics().ap[q]:.2f}") for q in shown]
    bins = occlusion_bins_figure(explorer.by_occlusion())
    return table, cmc_figure(curves), bins, public(note), pictures, pictured(benchmark, shown)


def open_failure(checkpoint: str, table, view: dict | None, event: gr.SelectData):
    row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
    query_index = int(table.iloc[row]["query"])
    return (gr.update(value=query_index), *select_query(checkpoint, query_index, view))


def opened(view: dict) -> str:
    return f"Query {view['query_index']} (`{view['file']}`) opened in the Query & occlude tab; Retrieval shows it too."


def build(ui) -> None:
    # filled when the tab opens (wire), not in every page's config; the empty table already has its columns
    columns = list(state.query_table_for(ui.start).columns)
    with gr.Tab("Failures") as ui.failures_tab:
        ui.failures_header = gr.Markdown(elem_id="failures_header")
        gr.Markdown(EXPLAIN, elem_classes=["explain"])
        with gr.Row():
            ui.occluder_filter = gr.Dropdown(["all", "person", "pole", "sign", "border"], value="all", label="occluder")
            ui.min_occluded = gr.Slider(0, 1, value=0, step=0.05, label="min occluded fraction")
            ui.only_failures = gr.Checkbox(value=False, label="only rank-1 failures")
            ui.failures_button = gr.Button("Refresh", elem_id="failures")
        with gr.Row():
            ui.failures_b = gr.Dropdown(
                [NO_B, *[value for _, value in state.checkpoint_options()]],
                value=NO_B,
                label="model B (adds its AP, rank and the rank-1 agreement)",
                elem_id="failures_b",
            )
            ui.agreement = gr.Radio(list(AGREEMENT), value="all", label="rank-1 agreement of A and B")
        ui.failure_note = gr.Markdown("Select a row to open that query.", elem_id="failure_note")
        ui.failure_pictures = gr.Gallery(
            label="the table's first 48 rows as pictures, in its order (click one to open it)",
            columns=10,
            height=190,
            object_fit="contain",
            allow_preview=False,
            elem_id="failure_pictures",
        )
        ui.failure_pictures_shown = gr.State(None)  # `picker.pictured`
        ui.table = gr.Dataframe(headers=columns, interactive=False, elem_id="failure_table", max_height=360)
        with gr.Row():
            ui.cmc_plot = gr.Plot(label="CMC")
            ui.bins_plot = gr.Plot(label="rank-1 and mAP by occlusion")
        cases.build(ui)


def wire(ui) -> None:
    listing = dict(
        fn=failures,
        inputs=[ui.model, ui.occluder_filter, ui.min_occluded, ui.only_failures, ui.failures_b, ui.agreement, ui.view],
        outputs=[ui.table, ui.cmc_plot, ui.bins_plot, ui.failure_note, ui.failure_pictures, ui.failure_pictures_shown],
    )
    ui.failures_button.click(api_name="failures", **listing)
    ui.failures_tab.select(**listing, **HIDDEN)  # the loaded model's table whenever the tab opens
    ui.table.select(open_failure, [ui.model, ui.table, ui.view], [ui.query, *ui.shown], **HIDDEN).then(
        opened, ui.view, ui.failure_note, **HIDDEN
    ).then(**ui.refresh).then(occlude.editor_background, ui.view, ui.editor, **HIDDEN)
    ui.failure_pictures.select(
        pick_thumbnail, [ui.model, ui.failure_pictures_shown, ui.view], [ui.query, *ui.shown], **HIDDEN
    ).then(opened, ui.view, ui.failure_note, **HIDDEN).then(**ui.refresh).then(
        occlude.editor_background, ui.view, ui.editor, **HIDDEN
    )
    on_query_change(ui, view_header, [ui.failures_header])
    cases.wire(ui)
    ui.case_imported.then(**listing, **HIDDEN)  # a case may be of another benchmark: the table follows it
