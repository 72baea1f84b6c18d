"""A pretrained peer as a model in the app: listed, loaded by name, scored as the benchmark scores it."""

import gradio as gr
import numpy as np
import pytest

from dpmpp.app.state import (
    PEER_CHOICES,
    canonical,
    checkpoint_choices,
    checkpoint_for,
    checkpoint_options,
    explorer_for,
    prototype_map_for,
)
from dpmpp.app.views.gradcam import explain
from dpmpp.app.views.mask import mask_view
from dpmpp.app.views.model import model_card
from dpmpp.app.views.picker import new_view
from dpmpp.app.views.space import umap_select
from dpmpp.data.datasets import load_split
from dpmpp.eval.extract import evaluate_similarity
from dpmpp.model.peers import load_peer
from dpmpp.paths import ASSETS, PROJECT_ROOT

PEER = next(label for label, name in PEER_CHOICES.items() if name == "omz-0288")


def test_every_peer_is_listed_and_loads_by_name():
    assert set(PEER_CHOICES.values()) == {"osnet-x0.25-msmt17", "omz-0288", "omz-0287", "omz-0286", "omz-0277"}
    assert all(label in checkpoint_choices() for label in PEER_CHOICES)
    assert checkpoint_for(PEER) == PEER and canonical(PEER) == (PEER,)


def test_the_checkpoint_list_shows_and_sends_no_server_paths():
    options = checkpoint_options()
    choices = checkpoint_choices()
    folders = [value for label, value in options if value not in PEER_CHOICES and "HSV" not in value]
    assert len(options) == len(choices) and all(label == value for label, value in options)
    assert folders and not any(value.startswith("/") or str(PROJECT_ROOT) in value for value in folders)
    assert sorted(checkpoint_for(value) for value in folders) == [c for c in choices if c.startswith("/")]


def test_a_peer_in_the_app_scores_the_benchmark_as_the_peer_does():
    explorer = explorer_for(PEER)
    assert explorer.embedder.name == "OMZ person-reid-retail-0288" and not explorer.has_mask
    split = load_split("pets09_occ", ASSETS / "pets09_occ")
    peer = load_peer("omz-0288")
    sim = peer.embed([r.path for r in split.query]) @ peer.embed([r.path for r in split.gallery]).T
    expected = evaluate_similarity(split, sim).summary()
    got = explorer.metrics().summary()
    assert got["rank1"] == pytest.approx(expected["rank1"]) and got["mAP"] == pytest.approx(expected["mAP"])
    result = explorer.retrieve(0, top_k=5)
    assert len(result.items) == 5 and all(np.isfinite(i.score) for i in result.items)


def test_what_a_peer_cannot_show_is_refused_with_a_reason():
    explorer = explorer_for(PEER)
    view = new_view(explorer, 0, None, "pets09_occ")
    with pytest.raises(gr.Error, match="no mask"):
        mask_view(PEER, view, 0.5)
    with pytest.raises(gr.Error, match="Grad-CAM needs a DPM\\+\\+ checkpoint"):
        explain(PEER, view)
    assert "zero-shot" in model_card(PEER) and "openvino" in model_card(PEER)


def test_a_selection_of_prototypes_says_they_have_no_image():
    from dpmpp.paths import DEFAULT_CHECKPOINT

    checkpoint = str(DEFAULT_CHECKPOINT)
    kinds = list(prototype_map_for(checkpoint).kind)
    prototypes = [i for i, kind in enumerate(kinds) if kind == "prototype"][:80]
    gallery = [i for i, kind in enumerate(kinds) if kind == "gallery"][:5]
    items, note = umap_select(checkpoint, {"event": {"type": "select", "points": prototypes + gallery}})
    assert len(items) == 5 and all(path for path, _ in items)
    assert note.startswith(
        f"{len(prototypes) + 5} points selected; {len(prototypes)} are prototypes, which have no image"
    )
