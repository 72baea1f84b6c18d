"""The Model tab: the model card, loading or uploading a checkpoint, the teacher's token, training a model."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from dpmpp.api import (
    COMPONENTS,
    MAX_EPOCHS,
    PEERS,
    CheckpointError,
    StopRefused,
    dataset_names,
    install_checkpoint,
    listed_twin,
    model_card_markdown,
    preset_names,
    safe_name,
    training_config,
)
from dpmpp.app import state
from dpmpp.app.classroom import is_teacher, require_manager, session_of, teacher_login
from dpmpp.app.common import SETTINGS, clip, display, refuse
from dpmpp.app.state import (
    BASELINES,
    HSV,
    PEER_CHOICES,
    check_checkpoint_quota,
    checkpoint_choices,
    checkpoint_for,
    checkpoint_options,
    option_name,
)
from dpmpp.app.status import STATUS, status_text
from dpmpp.app.views.picker import open_benchmark


def model_card(checkpoint: str) -> str:
    if checkpoint == HSV:
        return "### HSV colour floor\nPer-stripe HSV histograms, no learning: the floor every model must beat."
    if checkpoint in PEER_CHOICES:
        spec = PEERS[PEER_CHOICES[checkpoint]]
        return (
            f"### {spec.title}\nA pretrained person re-ID network used zero-shot (never trained here), run through "
            f"{spec.runtime}: {spec.params:,} parameters; training data: {spec.trained_on}. It has no mask and no "
            "saliency head: retrieval, the map and the failure table work; the mask, patch transfer and Grad-CAM "
            "need a DPM++ checkpoint."
        )
    return model_card_markdown(checkpoint)


def load_model(
    checkpoint: str,
    view: dict | None = None,
    request: gr.Request | None = None,
    progress=gr.Progress(),  # noqa: B008 - how Gradio asks for a progress bar
):
    """Another model for the session, on the benchmark of its view."""
    key = checkpoint_for(checkpoint, request)
    try:
        _, choices = open_benchmark(key, state.benchmark_of(view), progress)
        card = model_card(key)
    except (CheckpointError, FileNotFoundError, ValueError, OSError) as error:
        raise refuse(f"Could not load {display(key)}: {error}. The previous model stays active.", error) from error
    return key, card, gr.update(choices=choices, value=choices[0][1])


def upload_checkpoint(files, name: str, request: gr.Request | None = None):
    """Save uploaded checkpoint files as a new folder under the checkpoint dir, only if they load as a model, fit the
    quota and are not weights already listed."""
    require_manager(request, "upload checkpoints")
    paths = [Path(f if isinstance(f, (str, Path)) else f.name) for f in (files or [])]
    name = safe_name(clip(name, 64), "uploaded")
    if (Path(SETTINGS["checkpoint_dir"]) / name).exists():
        raise gr.Error(f"{name} already exists; choose another name. Nothing was saved.")
    try:
        check_checkpoint_quota(sum(p.stat().st_size for p in paths))
        twin = listed_twin(paths, [c for c in checkpoint_choices() if c not in BASELINES])
    except OSError as error:
        raise refuse("The uploaded files could not be read. Nothing was saved.", error) from error
    if twin is not None:
        raise gr.Error(f"These weights are already listed as {display(twin)}. Nothing was saved.")
    try:
        target = install_checkpoint(paths, SETTINGS["checkpoint_dir"], name)
    except CheckpointError as error:
        raise refuse(f"Not a usable checkpoint: {error}. Nothing was saved.", error) from error
    saved = f"Saved {display(target)}; press Load to use it."
    return gr.update(choices=checkpoint_options(), value=option_name(str(target))), saved


def start_training(
    dataset: str,
    root: str,
    preset: str,
    epochs: float,
    name: str,
    switches: list[str],
    request: gr.Request | None = None,
):
    require_manager(request, "start trainings")
    check_checkpoint_quota(state.TRAINING_RESERVE_MB << 20)
    try:
        config = training_config(dataset, str(root or ""), preset, epochs, switches or [], SETTINGS["data_root"])
        out_dir = Path(SETTINGS["checkpoint_dir"]) / safe_name(clip(name, 64), "app_run")
        status = state.JOBS.start(config, out_dir, owner=session_of(request))
    except (ValueError, RuntimeError) as error:
        raise refuse(str(error), error) from error
    return status_text(status)


def training_status(seen: dict | None = None):
    """The poll of every page (every 2 s): the status text, and the loss figure and checkpoint list only when they
    changed since this session last saw them (`seen`, the session's state)."""
    seen = dict(seen or {})
    text, drawing, figure = STATUS.now()
    options = checkpoint_options()
    figure_out = gr.skip() if seen.get("figure") == drawing else figure
    options_out = gr.skip() if seen.get("options") == options else gr.update(choices=options)
    seen.update(figure=drawing, options=options)
    return text, figure_out, options_out, seen


def poll_while_open(event: gr.SelectData):
    """The status poll runs while the Model tab is open (where its text and curves show), not behind other tabs:
    a class working in the query tabs does not poll the server every 2 s."""
    return gr.Timer(active=event.value == "Model")


def stop_training(request: gr.Request | None = None):
    try:
        return status_text(state.JOBS.stop(requester=session_of(request), override=is_teacher(request)))
    except StopRefused as error:
        raise gr.Error(f"Not stopped: {error}.") from error


def build(ui) -> None:
    with gr.Tab("Model"):
        with gr.Row():
            ui.checkpoint_box = gr.Dropdown(
                checkpoint_options(),
                value=option_name(ui.start),
                label="checkpoint",
                allow_custom_value=True,
                elem_id="checkpoint",
                scale=4,
            )
            ui.load_button = gr.Button("Load", elem_id="load_model", scale=1)
        with gr.Accordion("Upload a checkpoint", open=False):
            with gr.Row():
                ui.upload_files = gr.File(
                    file_count="multiple",
                    label="config.json, model.safetensors, ...",
                    file_types=[".json", ".safetensors"],
                )
                ui.upload_name = gr.Textbox(value="uploaded", label="folder name")
            ui.upload_button = gr.Button("Save checkpoint", elem_id="upload_checkpoint")
            ui.upload_note = gr.Markdown(elem_id="upload_note")
        ui.card = gr.Markdown(model_card(ui.start), elem_id="model_card")
        with gr.Accordion("Teacher", open=False, visible=bool(SETTINGS["classroom"])):
            with gr.Row():
                ui.token = gr.Textbox(label="teacher token (printed when the server started)", type="password")
                ui.token_button = gr.Button("Unlock", elem_id="teacher_login")
        with gr.Accordion("Train a model", open=False):
            with gr.Row():
                ui.dataset = gr.Dropdown(
                    ["pets09_occ"] + [n for n in dataset_names() if not n.startswith("pets09")],
                    value="pets09_occ",
                    label="dataset",
                )
                ui.root = gr.Textbox(label="folder under --data-root (own datasets)", value="")
                ui.preset = gr.Dropdown(preset_names(), value="tiny", label="preset")
                ui.epochs = gr.Number(value=30, precision=0, minimum=1, maximum=MAX_EPOCHS, label="epochs (stage 2)")
                ui.run_name = gr.Textbox(value="my_run", label="checkpoint name")
            ui.switches = gr.CheckboxGroup(
                COMPONENTS,
                value=list(COMPONENTS),
                label="components",
                info="Class-ignoring follows the preset (auto): it acts only where the learnt saliency head, "
                "not the benchmark's person silhouettes, guides patch transfer.",
            )
            with gr.Row():
                ui.train_button = gr.Button("Start training", variant="primary", elem_id="train")
                ui.stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
            ui.job_status = gr.Markdown(status_text(state.JOBS.status()), elem_id="job_status")
            ui.loss_plot = gr.Plot(label="losses and accuracy")


def wire(ui) -> None:
    ui.load_button.click(load_model, [ui.checkpoint_box, ui.view], [ui.model, ui.card, ui.query], api_name="load_model")
    ui.token_button.click(teacher_login, ui.token, [ui.role, ui.token], api_name="teacher_login")
    ui.upload_button.click(
        upload_checkpoint,
        [ui.upload_files, ui.upload_name],
        [ui.checkpoint_box, ui.upload_note],
        api_name="upload_checkpoint",
    )
    training = [ui.dataset, ui.root, ui.preset, ui.epochs, ui.run_name, ui.switches]
    ui.train_button.click(start_training, training, ui.job_status, api_name="train")
    ui.stop_button.click(stop_training, None, ui.job_status, api_name="stop_training")
    ui.timer = gr.Timer(2.0)
    ui.status_seen = gr.State(None)  # what this page last received of the status (`training_status`)
    ui.timer.tick(
        training_status,
        ui.status_seen,
        [ui.job_status, ui.loss_plot, ui.checkpoint_box, ui.status_seen],
        api_name="train_status",
    )
