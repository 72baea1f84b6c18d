"""Grad-CAM of the session's query, clean and occluded, toward its person's prototype (in the Query & occlude tab)."""

from __future__ import annotations

import gradio as gr

from dpmpp.app import state
from dpmpp.app.common import view_image
from dpmpp.explorer import prototype_persons
from dpmpp.viz.overlays import heat_panel

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
