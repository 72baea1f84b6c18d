"""The page: a header, then one tab per view (dpmpp.app.views), each laid out and wired by its own module."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from dpmpp.app.classroom import role_note
from dpmpp.app.common import ABOUT, FORMAT_JS, HIDDEN, PRESENTER_JS
from dpmpp.app.state import BENCHMARKS, start_checkpoint
from dpmpp.app.views import compare, failures, mask, model, picker, query, retrieval, space

VIEWS = (model, query, mask, retrieval, compare, space, failures)  # the tabs, in order


def build_demo(checkpoint: str | None = None, benchmarks: tuple[str, ...] = tuple(BENCHMARKS)) -> gr.Blocks:
    """The app with `checkpoint` loaded first (default: the bundled model), offering `benchmarks`."""
    start = start_checkpoint(checkpoint)
    with gr.Blocks(
        title="dpmpp — occluded re-ID explorer",
        analytics_enabled=False,
        delete_cache=(600, 3600),  # uploads and produced files are deleted an hour after they were written
    ) as demo:
        # `ui` carries what views share: the session's model and view, and the components other views use
        ui = SimpleNamespace(start=start, benchmarks=benchmarks, model=gr.State(start), view=gr.State(None))
        gr.Markdown("# dpmpp — occluded person re-identification, seen through DPM++'s masked metric")
        gr.Markdown(ABOUT, elem_classes=["explain"])
        with gr.Row(equal_height=True):
            ui.presenter = gr.Checkbox(
                value=False,
                label="presenter mode: larger text and crops, short explanations",
                elem_id="presenter",
                container=False,
                scale=3,
            )
            ui.figure_format = gr.Radio(
                ["figures download as SVG", "figures download as PNG"],
                value="figures download as SVG",
                label="figures download as (camera icon on each figure)",
                elem_id="figure_format",
                container=False,
                scale=2,
            )
        ui.role = gr.Markdown(role_note(), elem_id="role_note")
        with gr.Tabs() as ui.tabs:
            for view in VIEWS:
                view.build(ui)
        retrieval.wire(ui)  # first: it owns the name /retrieve, and the others end with its refresh
        for view in VIEWS:
            if view is not retrieval:
                view.wire(ui)
        demo.load(picker.first_query, [ui.model, ui.query, ui.benchmark], ui.shown, **HIDDEN).then(**ui.refresh)
        demo.load(role_note, None, ui.role, **HIDDEN)
        ui.tabs.select(model.poll_while_open, None, ui.timer, **HIDDEN)
        ui.presenter.change(None, ui.presenter, None, js=PRESENTER_JS)
        ui.figure_format.change(None, ui.figure_format, None, js=FORMAT_JS)
    return demo
