"""Case files, under the failure table: export the current query, its occlusion and top-k as JSON, import it back."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr

from dpmpp.api import CaseError, build_case, read_case, safe_name, weights_hash, write_text
from dpmpp.app import state
from dpmpp.app.common import clip, view_image
from dpmpp.app.state import BASELINES
from dpmpp.app.views.compare import sweep_key
from dpmpp.app.views.occlude import occlude_paste, occlude_transfer
from dpmpp.app.views.picker import query_choices, select_query
from dpmpp.app.views.retrieval import top_k_of

EXPORTS = {"folder": None, "age_s": 600.0}  # one folder of case files per server; a file lives 10 minutes


def export_folder() -> Path:
    """This server's folder of exported case files, removed when the server exits; entries older than
    EXPORTS["age_s"] are deleted at each export (the browser's download is served from Gradio's own copy)."""
    if EXPORTS["folder"] is None or not Path(EXPORTS["folder"]).is_dir():
        EXPORTS["folder"] = tempfile.mkdtemp(prefix="dpmpp_cases_")
        atexit.register(shutil.rmtree, EXPORTS["folder"], True)
    folder = Path(EXPORTS["folder"])
    cutoff = time.time() - EXPORTS["age_s"]
    for entry in folder.iterdir():
        if entry.stat().st_mtime <= cutoff:
            shutil.rmtree(entry, ignore_errors=True)
    return folder


def export_case(checkpoint: str, view: dict, top_k: float, use_mask: bool, sweep: dict | None = None):
    """The session's query, occlusion, model, mask and top-k as a JSON case file; with the occlusion sweep of the
    Compare tab when it was run on this query."""
    checkpoint_hash = "" if checkpoint in BASELINES else weights_hash(checkpoint)
    image = view_image(view, "occluded")
    top_k = top_k_of(top_k)
    case = build_case(state.explorer_of(checkpoint, view), view, image, checkpoint, checkpoint_hash, top_k, use_mask)
    if sweep and {k: sweep.get(k) for k in sweep_key(view)} == sweep_key(view):
        case.sensitivity = list(sweep.get("maps") or [])
    path = export_folder() / uuid.uuid4().hex / f"case_{safe_name(view['file'].rsplit('.', 1)[0], 'query')}.json"
    path.parent.mkdir()
    write_text(path, case.to_json())
    return str(path)


def import_case(checkpoint: str, file):
    if file is None:
        raise gr.Error("Choose a case file (.json) exported from this app.")
    try:
        case = read_case(file if isinstance(file, (str, Path)) else file.name)
    except CaseError as error:
        raise gr.Error(str(error)) from error
    if case.query_index < 0:
        raise gr.Error("This case was made from an uploaded image, which the case file does not contain.")
    if case.dataset not in state.BENCHMARKS:
        raise gr.Error(
            f"This case was made on {clip(case.dataset)!r}; the app offers {', '.join(state.BENCHMARKS)}. "
            "Nothing was loaded."
        )
    count = len(state.explorer_for(checkpoint, case.dataset).split.query)
    if case.query_index >= count:
        raise gr.Error(
            f"This case names query {case.query_index}, but the benchmark has {count} queries (0 to {count - 1}): "
            "it was edited, or made with another version of the benchmark. Nothing was loaded."
        )
    notes = []
    if case.checkpoint_hash and checkpoint not in BASELINES and weights_hash(checkpoint) != case.checkpoint_hash:
        notes.append(
            f"Note: the case was made with {case.checkpoint} ({case.checkpoint_hash}); another model is "
            "loaded, so scores differ."
        )
    view, shown, _, _ = select_query(checkpoint, case.query_index, benchmark=case.dataset)
    method = case.occlusion.get("method", "none")
    if method == "transfer":
        view, shown, _, _ = occlude_transfer(checkpoint, view, case.occlusion["partner"], case.occlusion["shift"])
    elif method == "paste":
        o = case.occlusion
        view, shown, _ = occlude_paste(view, o["occluder"], o["x"], o["y"], o["scale"])
    elif method == "paint":
        notes.append("Painted regions are not stored in case files; showing the clean query.")
    notes.insert(0, f"Loaded case: query {case.query_file}, occlusion {method}.")
    choices = gr.update(choices=query_choices(state.explorer_for(checkpoint, case.dataset)), value=case.query_index)
    return choices, case.dataset, view, shown, case.top_k, case.use_mask, " ".join(notes)


def build(ui) -> None:
    with gr.Row():
        ui.export_button = gr.Button("Export this case", elem_id="export_case")
        ui.case_file = gr.File(label="case file (JSON)", file_types=[".json"], elem_id="case_file")
        ui.import_button = gr.Button("Import case", elem_id="import_case")
    ui.case_note = gr.Markdown(elem_id="case_note")


def wire(ui) -> None:
    ui.export_button.click(
        export_case, [ui.model, ui.view, ui.top_k, ui.use_mask, ui.sweep_record], ui.case_file, api_name="export_case"
    )
    ui.case_imported = ui.import_button.click(
        import_case,
        [ui.model, ui.case_file],
        [ui.query, ui.benchmark, ui.view, ui.occluded_image, ui.top_k, ui.use_mask, ui.case_note],
        api_name="import_case",
    ).then(**ui.refresh)
