"""The Compare tab: the session's query, as occluded, ranked by two models side by side, where the two disagree on
the benchmark, and occlusion sensitivity: an occluder slid over the query, the true match scored at each place."""

from __future__ import annotations

import gradio as gr
import numpy as np
from PIL import Image

from dpmpp.app import state
from dpmpp.app.common import PHOTO, display, on_query_change, refuse, view_header, view_image
from dpmpp.app.views.retrieval import STRIP_CROP, strip_items
from dpmpp.explorer import GREY, MAX_POSITIONS, grey_block, occlusion_sensitivity, person_occluder
from dpmpp.viz.rank_strip import rank_strip
from dpmpp.viz.sensitivity import METRICS, sensitivity_figure

EXPLAIN = (
    "**Model A** is the model loaded in the Model tab; pick **model B** here: another checkpoint, a pretrained "
    "peer or the HSV floor. Both rank the gallery for the same query with the same occlusion. The counts compare "
    "the two on every benchmark query (rank-1). **Occlusion sensitivity** slides an occluder over the query as "
    "given and scores the true match with the occluder at each place: red where it breaks the model."
)
PERSON = "another person (A's top wrong match)"
GRIDS = {"5 × 10 (50 places)": (10, 5), "4 × 8 (32 places)": (8, 4), "6 × 12 (72 places)": (12, 6)}
TOP_K = 8


def model_label(checkpoint: str) -> str:
    return checkpoint if checkpoint in state.BASELINES else display(checkpoint)


def occlusion_label(view: dict) -> str:
    method = (view.get("occlusion") or {}).get("method", "none")
    return "as given" if view.get("occluded") is None else f"occluded ({method})"


def disagreement(a, b) -> str:
    """Rank-1 of the two explorers on the same benchmark queries, crossed."""
    right_a, right_b = a.metrics().first_true_rank == 1, b.metrics().first_true_rank == 1
    only_a, only_b = np.flatnonzero(right_a & ~right_b), np.flatnonzero(~right_a & right_b)
    rows = [
        "| | B right | B wrong |",
        "|---|---|---|",
        f"| **A right** | {int((right_a & right_b).sum())} | {len(only_a)} |",
        f"| **A wrong** | {len(only_b)} | {int((~right_a & ~right_b).sum())} |",
    ]
    listing = lambda picks: ", ".join(str(int(i)) for i in picks[:12]) + (" …" if len(picks) > 12 else "")  # noqa: E731
    rows.append(f"\nA right, B wrong: queries {listing(only_a) or '–'}  \nA wrong, B right: {listing(only_b) or '–'}")
    return "\n".join(rows)


def compare(checkpoint: str, model_b: str, view: dict, use_mask: bool, request: gr.Request | None = None):
    other = state.checkpoint_for(model_b, request)
    image = view_image(view, "occluded")
    strips, lines = [], []
    explorers = [state.explorer_of(checkpoint, view), state.explorer_of(other, view)]
    for name, explorer in zip((checkpoint, other), explorers):
        scores = explorer.scores(explorer.embed([image]), use_mask)[0]
        result = explorer.rank(scores, view.get("pid"), view.get("camid"), TOP_K)
        strips.append(rank_strip(image, strip_items(result), size=STRIP_CROP))
        first = f"first true match at rank {result.first_true_rank}" if result.first_true_rank else "no true match"
        known = view.get("pid") is not None
        lines.append(f"**{model_label(name)}**: " + (f"AP {result.ap:.3f}, {first}" if known else "identity unknown"))
    header = f"Query **{view.get('file', '?')}**, {occlusion_label(view)}."
    table = disagreement(*explorers)
    return strips[0], strips[1], header + "  \n" + "  \n".join(lines) + "\n\n" + table


def sweep_occluder(explorer, view: dict, occluder: str):
    if occluder == GREY:
        return None
    if occluder == PERSON:  # the gallery crop of another identity that A ranks highest for the clean query
        scores = explorer.scores(explorer.embed([view["clean"]]))[0]
        others = np.flatnonzero(explorer.g_pids != view["pid"])
        return person_occluder(explorer.split.gallery[int(others[np.argmax(scores[others])])].path)
    bank = state.occluder_bank()
    if occluder not in bank:
        raise gr.Error(f"Unknown occluder; choose one of: {GREY}, {PERSON}, {', '.join(bank)}.")
    return bank[occluder].path


def sensitivity(
    checkpoint: str,
    model_b: str,
    view: dict,
    occluder: str,
    scale: float,
    grid: str,
    metric: str,
    both: bool,
    use_mask: bool,
    request: gr.Request | None = None,
):
    image = view_image(view, "clean")
    if view.get("pid") is None:
        raise gr.Error("Occlusion sensitivity needs a benchmark query: an uploaded image has no known identity.")
    rows, columns = GRIDS.get(grid, (10, 5))
    metric = metric if metric in METRICS else "AP"
    names = [checkpoint] + ([state.checkpoint_for(model_b, request)] if both else [])
    maps = []
    for name in names:
        explorer = state.explorer_of(name, view)
        block = sweep_occluder(explorer, view, occluder)
        block = grey_block(image.shape[0]) if block is None else block
        try:
            smap = occlusion_sensitivity(
                explorer,
                image,
                view["pid"],
                view["camid"],
                _as_image(block),
                occluder,
                float(scale),
                rows,
                columns,
                use_mask,
            )
        except ValueError as error:
            raise refuse(str(error), error) from error
        smap.model = model_label(name)
        maps.append(smap)
    worst = maps[0].worst
    where = "" if worst is None else f" A's worst place: x {worst[0]:.2f}, y {worst[1]:.2f} of the crop."
    note = (
        f"Query **{view.get('file', '?')}** as given; {occluder}, {float(scale):.0%} of the height, "
        f"{rows * columns} places (at most {MAX_POSITIONS}).{where}"
    )
    record = {**sweep_key(view), "maps": [smap.to_dict() for smap in maps]}  # what a case export carries
    return sensitivity_figure(np.asarray(image), maps, metric), note, record


def sweep_key(view: dict | None) -> dict:
    """Which query a sweep belongs to: a case carries the sweep only while the session still shows that query."""
    view = view or {}
    return {"benchmark": view.get("benchmark"), "query_index": view.get("query_index"), "file": view.get("file")}


def _as_image(block) -> Image.Image:
    return block if isinstance(block, Image.Image) else Image.open(block)


def build(ui) -> None:
    with gr.Tab("Compare"):
        ui.compare_header = gr.Markdown(elem_id="compare_header")
        gr.Markdown(EXPLAIN, elem_classes=["explain"])
        with gr.Row():
            ui.model_b = gr.Dropdown(
                state.checkpoint_options(), value=state.HSV, label="model B", elem_id="model_b", scale=4
            )
            ui.compare_button = gr.Button("Compare", variant="primary", elem_id="compare", scale=1)
        ui.compare_note = gr.Markdown(elem_id="compare_note")
        with gr.Row():
            ui.strip_a = gr.Image(label="model A", type="pil", elem_id="strip_a", **PHOTO)
            ui.strip_b = gr.Image(label="model B", type="pil", elem_id="strip_b", **PHOTO)
        with gr.Accordion("Occlusion sensitivity", open=True):
            with gr.Row():
                choices = [GREY, PERSON, *state.occluder_bank()]
                ui.sweep_occluder = gr.Dropdown(choices, value=GREY, label="occluder")
                ui.sweep_scale = gr.Slider(0.1, 0.7, value=0.35, step=0.05, label="occluder height (share of crop)")
                ui.sweep_grid = gr.Radio(list(GRIDS), value=next(iter(GRIDS)), label="grid")
                ui.sweep_metric = gr.Radio(list(METRICS), value="AP", label="show")
                ui.sweep_both = gr.Checkbox(value=True, label="model B too")
            ui.sweep_button = gr.Button("Sweep", elem_id="sweep")
            ui.sweep_plot = gr.Plot(elem_id="sweep_plot")
            ui.sweep_note = gr.Markdown(elem_id="sweep_note")
            ui.sweep_record = gr.State(None)  # the last sweep's numbers, for "Export this case" (Failures tab)


def wire(ui) -> None:
    compare_inputs = [ui.model, ui.model_b, ui.view, ui.use_mask]
    ui.compare_button.click(
        compare, compare_inputs, [ui.strip_a, ui.strip_b, ui.compare_note], api_name="compare_models"
    )
    on_query_change(ui, view_header, [ui.compare_header])
    sweep_inputs = [ui.sweep_occluder, ui.sweep_scale, ui.sweep_grid, ui.sweep_metric, ui.sweep_both]
    ui.sweep_button.click(
        sensitivity,
        [ui.model, ui.model_b, ui.view, *sweep_inputs, ui.use_mask],
        [ui.sweep_plot, ui.sweep_note, ui.sweep_record],
        api_name="occlusion_sensitivity",
    )
