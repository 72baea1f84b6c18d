"""The Mask tab: the mask over the prototype dimensions, as given and occluded, and per-dimension contributions."""

from __future__ import annotations

import gradio as gr
import numpy as np

from dpmpp.app import state
from dpmpp.app.common import HIDDEN, on_query_change, view_header, view_image
from dpmpp.viz.mask_plots import contributions, mask_bars

EXPLAIN = (
    "**The mask** is not over pixels. It is over the dimensions of the identity-prototype space: one value in "
    "(0, 1) per dimension, predicted from the image. The query is compared with each gallery image only in the "
    "dimensions its mask keeps. When a body part is hidden, the dimensions that describe it should switch off."
)


def mask_view(checkpoint: str, view: dict, threshold: float):
    explorer = state.explorer_of(checkpoint, view)
    if not explorer.has_mask:
        raise gr.Error("This model has no mask (a baseline, a pretrained peer, or model.use_mask=false).")
    clean_image = view_image(view, "clean")
    images = [clean_image] + ([view["occluded"]] if view.get("occluded") is not None else [])
    embedded = explorer.embed(images)
    clean_mask = embedded.masks[0]
    occluded_mask = embedded.masks[1] if len(images) > 1 else None
    query_feat, query_mask = embedded.features[-1], embedded.masks[-1]
    counts = f"Active dimensions (mask > {threshold:.2f}): clean {(clean_mask > threshold).sum()} of {len(clean_mask)}"
    if occluded_mask is not None:
        counts += (
            f", occluded {(occluded_mask > threshold).sum()}; mean |difference| "
            f"{np.abs(occluded_mask - clean_mask).mean():.3f}"
        )
    true_feat = wrong_feat = None
    if view.get("pid") is not None:
        true, wrong = explorer.best_matches(explorer.scores(embedded, True)[-1], view["pid"], view["camid"])
        true_feat = explorer.gallery.features[true] if true is not None else None
        wrong_feat = explorer.gallery.features[wrong] if wrong is not None else None
    figure = contributions(query_feat, query_mask, true_feat, wrong_feat)
    return mask_bars(clean_mask, occluded_mask, threshold), counts, figure


def mask_cleared(checkpoint: str, view: dict):
    """A new query, occlusion or model: the header says which, the previous plots go."""
    return view_header(checkpoint, view), None, "Press **Show mask** for this query.", None


def build(ui) -> None:
    with gr.Tab("Mask"):
        ui.mask_header = gr.Markdown(elem_id="mask_header")
        gr.Markdown(EXPLAIN, elem_classes=["explain"])
        ui.threshold = gr.Slider(0, 1, value=0.5, step=0.01, label="threshold for 'active'")
        ui.mask_button = gr.Button("Show mask", elem_id="mask")
        ui.mask_plot = gr.Plot(label="mask over prototype dimensions")
        ui.mask_counts = gr.Markdown(elem_id="mask_counts")
        ui.contribution_plot = gr.Plot(label="per-dimension contributions: first true match vs top wrong match")


def wire(ui) -> None:
    inputs, outputs = [ui.model, ui.view, ui.threshold], [ui.mask_plot, ui.mask_counts, ui.contribution_plot]
    ui.mask_button.click(mask_view, inputs, outputs, api_name="mask")
    ui.threshold.release(mask_view, inputs, outputs, **HIDDEN)
    on_query_change(ui, mask_cleared, [ui.mask_header, *outputs])
