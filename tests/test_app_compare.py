"""The Compare tab: two models on the same query and occlusion, where they disagree, and occlusion sensitivity."""

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from dpmpp.app.state import HSV, explorer_for
from dpmpp.app.views.cases import export_case
from dpmpp.app.views.compare import GRIDS, PERSON, compare, disagreement, model_label, sensitivity
from dpmpp.app.views.occlude import occlude_paste
from dpmpp.app.views.picker import select_query
from dpmpp.paths import DEFAULT_CHECKPOINT
from dpmpp.sensitivity import SensitivityMap

CHECKPOINT = str(DEFAULT_CHECKPOINT)


@pytest.fixture(scope="module")
def view():
    return occlude_paste(select_query(CHECKPOINT, 5)[0], "sign", 0.5, 0.45, 0.4)[0]


def test_both_models_rank_the_same_occluded_query(view):
    strip_a, strip_b, note = compare(CHECKPOINT, HSV, view, True)
    assert strip_a.size[1] == strip_b.size[1] > 0
    assert view["file"] in note and "occluded (paste)" in note and HSV in note
    a, b = explorer_for(CHECKPOINT), explorer_for(HSV)
    for explorer, line in zip((a, b), note.splitlines()[1:3]):
        scores = explorer.scores(explorer.embed([view["occluded"]]))[0]
        result = explorer.rank(scores, view["pid"], view["camid"])
        assert f"AP {result.ap:.3f}" in line  # each model's own ranking of the occluded image


def test_disagreement_counts_cross_the_two_models_rank1(view):
    a, b = explorer_for(CHECKPOINT), explorer_for(HSV)
    right_a, right_b = a.metrics().first_true_rank == 1, b.metrics().first_true_rank == 1
    table = disagreement(a, b)
    cells = [int(c) for line in table.splitlines()[2:4] for c in line.split("|")[2:4]]
    assert cells == [
        int((right_a & right_b).sum()),
        int((right_a & ~right_b).sum()),
        int((~right_a & right_b).sum()),
        int((~right_a & ~right_b).sum()),
    ]
    assert sum(cells) == len(a.split.query) and 0 < cells[1]  # the model gets queries right that HSV misses


def test_sensitivity_sweeps_both_models_on_one_scale(view):
    figure, note, record = sensitivity(CHECKPOINT, HSV, view, "grey block", 0.35, next(iter(GRIDS)), "AP", True, True)
    heatmaps = [t for t in figure.data if t.type == "heatmap"]
    assert len(heatmaps) == 2 and np.asarray(heatmaps[0].z).shape == (10, 5)
    assert heatmaps[0].zmin == heatmaps[1].zmin == 0 and heatmaps[0].zmax == heatmaps[1].zmax == 1
    assert view["file"] in note and "50 places" in note
    # the sweep travels with a case of this query, and reads back as the same map; not with another query's case
    case = json.loads(Path(export_case(CHECKPOINT, view, 5, True, record)).read_text())
    assert [m["model"] for m in case["sensitivity"]] == [model_label(CHECKPOINT), HSV]
    restored = SensitivityMap.from_dict(case["sensitivity"][0])
    np.testing.assert_allclose(restored.ap, np.asarray(heatmaps[0].z, float), atol=1e-5)
    assert restored.occluder == "grey block" and restored.rank.shape == (10, 5)
    other = select_query(CHECKPOINT, 7)[0]
    assert json.loads(Path(export_case(CHECKPOINT, other, 5, True, record)).read_text())["sensitivity"] == []
    person, _, _ = sensitivity(CHECKPOINT, HSV, view, PERSON, 0.5, "4 × 8 (32 places)", "rank", False, True)
    assert len([t for t in person.data if t.type == "heatmap"]) == 1


def test_sensitivity_refuses_an_image_without_identity(view):
    uploaded = {**view, "pid": None, "camid": None, "file": "uploaded image"}
    with pytest.raises(gr.Error, match="benchmark query"):
        sensitivity(CHECKPOINT, HSV, uploaded, "grey block", 0.35, next(iter(GRIDS)), "AP", False, True)
    with pytest.raises(gr.Error, match="Unknown occluder"):
        sensitivity(CHECKPOINT, HSV, view, "no such occluder", 0.35, next(iter(GRIDS)), "AP", False, True)
