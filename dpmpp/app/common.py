"""What every view shares: the server's settings and what visitors are told (short messages, no server paths)."""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path

import gradio as gr

from dpmpp.api import CHECKPOINTS

logger = logging.getLogger("dpmpp.app")
SETTINGS = {
    "checkpoint_dir": CHECKPOINTS,
    "data_root": None,
    "start": None,  # the checkpoint loaded first; listed for everyone
    "classroom": False,  # students may not train, upload checkpoints or load unlisted folders
    "inference_threads": None,  # OpenVINO's threads for a checkpoint's encoder (None: torch's thread count)
    "teacher_token": os.environ.get("DPMPP_TEACHER_TOKEN") or secrets.token_urlsafe(16),
    "idle_minutes": 30.0,  # a session unused this long is dropped with its images
    "checkpoint_quota_mb": 2048,  # the checkpoint folder: uploads and trainings stop above this
    "upload_quota_mb": 1024,  # files visitors upload, until the cache deletes them (after an hour)
}
ECHO_CHARS, MESSAGE_CHARS = 100, 400  # visitor input echoed in a message; a whole message
# Photos and strips are sent as JPEG: about 2 ms to encode a 1600x360 strip, where Gradio's default WebP takes 40 ms
# and PNG 90 ms, which a class of thirty would wait for.
PHOTO = {"format": "jpeg"}
HIDDEN = {"api_visibility": "undocumented"}  # follow-up steps of a named event, not API endpoints of their own

ABOUT = (
    "**Data**: PETS 2009 S2.L1, View 001 (© University of Reading; Ferryman & Shahrokni, PETS 2009) with the "
    "MOTChallenge 2015 boxes (Leal-Taixé et al., arXiv:1504.01942), cut into the `pets09_occ` benchmark: "
    "213 occluded queries, 754 holistic gallery crops, 10 persons. A true match must come from another appearance "
    "(track) of the same person. Also CUHK01 (W. Li, R. Zhao, X. Wang, ACCV 2012; non-commercial research use), "
    "486 test persons of split 0, clean (`cuhk01`) or with synthetic occluders pasted on the camera-A queries "
    "(`cuhk01_occ`): switch in the Query tab. **Model**: DPM++ (dynamic masked metric learning) trained by this "
    "project; its model card is in the Model tab."
)

# ----- what visitors are told ------------------------------------------------------------------------------------
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(?:[^\s/'\"`()\[\]{},;:]+/)*([^\s/'\"`()\[\]{},;:]*)")


def clip(text, limit: int = ECHO_CHARS) -> str:
    """`text` cut to `limit` characters: what a message may echo of a visitor's input."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "…"


def public(text, limit: int = MESSAGE_CHARS) -> str:
    """A message fit for any visitor: every absolute path reduced to its last part, at most `limit` characters."""
    return clip(_ABSOLUTE_PATH.sub(lambda match: match.group(1) or "/", str(text)), limit)


def refuse(message, error: Exception | None = None) -> gr.Error:
    """A gr.Error for visitors (no server paths, bounded length); the full error goes to the server log."""
    if error is not None:
        logger.info("refused: %s (%s: %s)", clip(message, 200), type(error).__name__, clip(error, 2000))
    return gr.Error(public(message))


def display(path) -> str:
    """A checkpoint folder as visitors see it: relative to the checkpoint folder, else its name."""
    path, root = Path(path), Path(SETTINGS["checkpoint_dir"]).resolve()
    return clip(str(path.relative_to(root)) if path.is_relative_to(root) else path.name or "/")


def view_image(view: dict, which: str):
    """The session's query image `which` ("clean" or "occluded"; the clean one until it is occluded)."""
    if view is None or view.get("clean") is None:
        raise gr.Error("Pick a query (or upload an image) first.")
    image = view.get(which)
    return view["clean"] if image is None else image


def occlusion_text(view: dict | None) -> str:
    """The session's occlusion in a few words."""
    occlusion = (view or {}).get("occlusion") or {}
    method = occlusion.get("method", "none")
    if method == "paste":
        return f"{occlusion.get('occluder', 'an occluder')} pasted"
    if method == "transfer":
        return f"patch transfer from {Path(str(occlusion.get('partner', ''))).name}"
    if method == "paint":
        return f"painted ({occlusion.get('fill', '')}, {occlusion.get('fraction', 0):.0%})"
    return "none (as given)"


def view_header(checkpoint: str, view: dict | None) -> str:
    """One line that says which query, occlusion and model a view shows."""
    if view is None or view.get("clean") is None:
        return "*No query yet: pick one (or upload an image) in the Query & occlude tab.*"
    benchmark = view.get("benchmark", "pets09_occ")
    query = (
        f"query {view['query_index']} of {benchmark} `{clip(view.get('file'))}`"
        if view.get("query_index", -1) >= 0
        else f"uploaded image (ranked against the {benchmark} gallery)"
    )
    model = checkpoint if not Path(str(checkpoint)).is_absolute() else display(checkpoint)
    person = f", person {view['pid']}" if view.get("pid") is not None else ""
    return f"**Showing** {query}{person} · **occlusion**: {occlusion_text(view)} · **model**: {clip(model)}"


def on_query_change(ui, fn, outputs: list) -> None:
    """Run fn(checkpoint, view) -> outputs whenever the session's query, its occlusion or its model changes, so a
    view never shows another query's results."""
    for state in (ui.view, ui.model):
        state.change(fn, [ui.model, ui.view], outputs, **HIDDEN)


# Keys for stepping through queries (a teacher at the projector, an analyst through failures): n and p click the
# next/previous buttons, unless the visitor is typing in a field.
KEYBOARD_HEAD = """<script>
document.addEventListener('keydown', (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName))) return;
  const id = {n: 'next_query', p: 'previous_query'}[event.key];
  const button = id && document.getElementById(id);
  if (button) { event.preventDefault(); button.click(); }
});
</script>"""

# Figures download through the camera icon of their toolbar (Plotly's modebar), as SVG for slides by default or as
# PNG at twice the screen's resolution: the choice of the page's "figures download as" switch, applied to the
# clicked figure just before Plotly reads it.
FIGURE_HEAD = """<script>
window.dpmppFigureFormat = 'svg';
document.addEventListener('click', (event) => {
  const button = event.target.closest && event.target.closest('.modebar-btn[data-title^="Download plot"]');
  const figure = button && button.closest('.js-plotly-plot');
  if (!figure || !figure._context) return;
  const title = document.title.split(' ')[0] || 'figure';
  const name = (figure.closest('[id]') || {}).id || 'figure';
  figure._context.toImageButtonOptions = {
    format: window.dpmppFigureFormat, filename: `${title}_${name}`, scale: window.dpmppFigureFormat === 'png' ? 2 : 1,
  };
}, true);
</script>"""

# Presenter mode (a switch at the top of the page, for a projector): larger text and crops, each view's explanation
# cut to its first two lines (hover shows the rest).
PRESENTER_CSS = """
body.presenter .gradio-container { font-size: 125%; }
body.presenter .prose p, body.presenter .prose li, body.presenter .prose td, body.presenter .prose th {
  font-size: 1.2rem !important; line-height: 1.45 !important;
}
body.presenter .explain { display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden; }
body.presenter .explain:hover { display: block; }
body.presenter #clean_image, body.presenter #occluded_image { height: 480px !important; }
body.presenter #clean_image img, body.presenter #occluded_image img {
  height: 440px !important; max-height: none !important; width: auto !important; object-fit: contain !important;
}
body.presenter button { font-size: 1.15rem !important; }
body.presenter label span, body.presenter .label-wrap span { font-size: 1.1rem !important; }
"""
PRESENTER_JS = "(on) => { document.body.classList.toggle('presenter', !!on); }"
FORMAT_JS = "(format) => { window.dpmppFigureFormat = String(format || 'SVG').split(' ').pop().toLowerCase(); }"
