"""Occluding the query, inside the Query & occlude tab: patch transfer, pasting a real occluder, painting."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from dpmpp.api import ASSETS, FILLS, PasteParams, paint, paste
from dpmpp.app import state
from dpmpp.app.common import clip, refuse, view_image
from dpmpp.app.widgets import MAX_LAYERS, CheckedImageEditor, load_layer_alpha
from dpmpp.viz.overlays import enlarge, heat_overlay, mask_overlay


def partner_paths() -> list[str]:
    return [r.path for r in state.partner_records()]


def partner_index(partners: list[str], partner: str) -> int:
    """A partner named by its file name (as the list shows it) or by its path under the project."""
    for index, path in enumerate(partners):
        if partner in (Path(path).name, str(Path(path).relative_to(ASSETS.parent))):
            return index
    raise gr.Error(f"Unknown partner {clip(partner)!r}; choose one from the list, or auto.")


def occlude_transfer(checkpoint: str, view: dict, partner: str, shift: float):
    explorer = state.explorer_for(checkpoint)
    if not explorer.has_saliency:
        raise gr.Error("Patch transfer needs a DPM++ checkpoint with a saliency head; load one in the Model tab.")
    clean = view_image(view, "clean")
    partners = partner_paths()
    index = None if partner in (None, "", "auto") else partner_index(partners, str(partner))
    result = explorer.transfer(
        clean,
        state.partner_records(),
        state.partner_saliency_for(checkpoint),
        partner_index=index,
        shift=None if shift is None or shift < 0 else int(shift),
    )
    view = {
        **view,
        "occluded": result.image,
        "occlusion": {
            "method": "transfer",
            "partner": str(Path(partners[result.partner_index]).relative_to(ASSETS.parent)),
            "shift": result.shift,
        },
    }
    gallery = [
        (enlarge(heat_overlay(result.anchor, result.anchor_saliency)), "query saliency"),
        (enlarge(mask_overlay(result.anchor, result.anchor_mask)), "query person mask"),
        (
            enlarge(heat_overlay(result.partner, result.partner_saliency)),
            "partner silhouette (background subtraction)"
            if explorer.partner_source(state.benchmark_person_masks()) == "silhouette"
            else "partner saliency",
        ),
        (enlarge(mask_overlay(result.partner, result.partner_mask)), "partner person mask"),
        (enlarge(result.image), "transferred result"),
    ]
    info = (
        f"Partner `{Path(partners[result.partner_index]).name}`, shift {result.shift} patch columns, "
        f"occlusion-aware IoU {result.oiou:.2f}; {result.occluded_fraction:.0%} of the pixels came from the partner."
    )
    if not result.anchor_mask.any():
        info += (
            f" **The model's saliency head marks no patch of this query as person** (its highest value, "
            f"{result.anchor_saliency.max():.2f}, is below the binarisation threshold), so the occlusion-aware IoU "
            "is 0 for every partner and *auto* takes the first partner at shift 0: choose the partner and shift "
            "by hand."
        )
    return view, enlarge(result.image), gallery, info


def occlude_paste(view: dict, occluder: str, x: float, y: float, scale: float):
    clean = view_image(view, "clean")
    bank = state.occluder_bank()
    if occluder not in bank:
        raise gr.Error(f"Unknown occluder {clip(occluder)!r}; choose one of {sorted(bank)}.")
    params = PasteParams(occluder, float(x), float(y), float(scale))
    try:
        result = paste(clean, bank[occluder].path, params)
    except ValueError as error:
        raise refuse(str(error), error) from error
    view = {**view, "occluded": np.asarray(result.image), "occlusion": {"method": "paste", **params.to_dict()}}
    return view, enlarge(result.image), f"{occluder} pasted: {result.occluded_fraction:.0%} of the crop covered."


def occlude_paint(view: dict, editor: dict | None, fill: str):
    clean = view_image(view, "clean")
    layers = (editor or {}).get("layers") or []
    if not layers:
        raise gr.Error("Paint over the part of the person to hide, then press Apply.")
    if len(layers) > MAX_LAYERS:
        raise gr.Error(f"At most {MAX_LAYERS} paint layers; merge or delete some.")
    if fill not in FILLS:
        raise gr.Error(f"Unknown fill {clip(fill)!r}; choose one of {list(FILLS)}.")
    alpha = np.zeros(clean.shape[:2], bool)
    for layer in layers:
        layer_alpha = load_layer_alpha(layer)
        alpha |= np.asarray(layer_alpha.resize((clean.shape[1], clean.shape[0]), Image.NEAREST)) > 0
    result = paint(clean, alpha, fill)
    view = {
        **view,
        "occluded": np.asarray(result.image),
        "occlusion": {"method": "paint", "fill": fill, "fraction": round(result.occluded_fraction, 4)},
    }
    return view, enlarge(result.image), f"Painted {result.occluded_fraction:.0%} of the crop ({fill})."


def editor_background(view: dict):
    if view is None or view.get("clean") is None:
        return None
    return {"background": enlarge(view["clean"]), "layers": [], "composite": None}


def build(ui) -> None:
    with gr.Tab("Patch transfer"):
        with gr.Row():
            ui.partner = gr.Dropdown(
                ["auto"] + [Path(p).name for p in partner_paths()],
                value="auto",
                label="partner (auto: best occlusion-aware IoU)",
            )
            ui.shift = gr.Number(value=-1, precision=0, label="shift in patch columns (-1: best)")
        ui.transfer_button = gr.Button("Transfer", elem_id="occlude_transfer")
        ui.transfer_steps = gr.Gallery(label="saliency and person masks", columns=5, height=300, object_fit="contain")
    with gr.Tab("Paste an occluder"):
        with gr.Row():
            ui.occluder = gr.Dropdown(sorted(state.occluder_bank()), value="sign", label="occluder (real crops)")
            ui.x = gr.Slider(0, 1, value=0.5, step=0.01, label="x (centre)")
            ui.y = gr.Slider(0, 1, value=0.5, step=0.01, label="y (centre)")
            ui.scale = gr.Slider(0.05, 1.5, value=0.3, step=0.01, label="scale (height / crop height)")
        ui.paste_button = gr.Button("Paste", elem_id="occlude_paste")
    with gr.Tab("Paint"):
        ui.editor = CheckedImageEditor(type="pil", label="paint the region to hide", height=300)
        with gr.Row():
            ui.fill = gr.Radio(["grey", "black", "blur", "noise"], value="grey", label="fill")
            ui.paint_button = gr.Button("Apply", elem_id="occlude_paint")


def wire(ui) -> None:
    occluded = [ui.view, ui.occluded_image, ui.info]
    ui.transfer_button.click(
        occlude_transfer,
        [ui.model, ui.view, ui.partner, ui.shift],
        [ui.view, ui.occluded_image, ui.transfer_steps, ui.info],
        api_name="occlude_transfer",
    ).then(**ui.refresh)
    ui.paste_button.click(
        occlude_paste, [ui.view, ui.occluder, ui.x, ui.y, ui.scale], occluded, api_name="occlude_paste"
    ).then(**ui.refresh)
    ui.paint_button.click(occlude_paint, [ui.view, ui.editor, ui.fill], occluded, api_name="occlude_paint").then(
        **ui.refresh
    )
