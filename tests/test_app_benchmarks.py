"""The app on both benchmarks (pets09_occ and CUHK01), the failure table against a model B, and the status poll that
sends only what changed."""

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from dpmpp.app import state
from dpmpp.app.views.cases import export_case, import_case
from dpmpp.app.views.compare import disagreement
from dpmpp.app.views.failures import failures
from dpmpp.app.views.model import training_status
from dpmpp.app.views.picker import pick_thumbnail, query_thumbnails, select_query, switch_benchmark
from dpmpp.app.views.retrieval import retrieve
from dpmpp.app.views.space import umap_view
from dpmpp.paths import DEFAULT_CHECKPOINT

HSV = state.HSV
CHECKPOINT = str(DEFAULT_CHECKPOINT)


@pytest.fixture(scope="module")
def cuhk01_view():
    update, view, *_ = switch_benchmark(HSV, "cuhk01_occ")
    return update, view


def test_switching_to_cuhk01_lists_its_queries_and_ranks_its_gallery(cuhk01_view):
    update, view = cuhk01_view
    explorer = state.explorer_for(HSV, "cuhk01_occ")
    assert len(update["choices"]) == len(explorer.split.query) == 972
    assert view["benchmark"] == "cuhk01_occ" and view["query_index"] == update["value"]
    # failures first: the first listed query has the lowest AP
    assert explorer.metrics().ap[update["value"]] == pytest.approx(np.nanmin(explorer.metrics().ap))
    clean_strip, _, summary = retrieve(HSV, view, 5, True)
    ranked = explorer.rank(explorer.scores(explorer.embed([view["clean"]]))[0], view["pid"], view["camid"], 5)
    assert all(item.camid == 1 for item in ranked.items)  # camera A queries against the camera B gallery
    assert f"AP {ranked.ap:.3f}" in summary
    # the session's next query comes from the same benchmark
    assert select_query(HSV, 3, view)[0]["file"] == Path(explorer.split.query[3].path).name


def test_cuhk01_failure_table_compares_each_query_with_its_own_clean_image(cuhk01_view):
    table, _, bins, note, _, _ = failures(HSV, "all", 0, False, "none", "all", cuhk01_view[1])
    assert note.startswith("cuhk01_occ: 972 queries") and len(table) == 972
    assert set(table["occluder"]) == {"person", "sign", "pole"}
    clean = state.explorer_for(HSV, "cuhk01")  # the same queries without their occluders
    ap_clean = dict(zip(range(972), clean.metrics().ap))
    for _, row in table.head(20).iterrows():
        assert row["AP clean"] == pytest.approx(ap_clean[row["query"]], abs=1e-4)
    assert {trace.name for trace in bins.data} == {"rank-1, mask off", "mAP, mask off"}


def test_a_case_keeps_its_benchmark(cuhk01_view):
    view = cuhk01_view[1]
    case = json.loads(Path(export_case(HSV, view, 5, True)).read_text())
    assert case["dataset"] == "cuhk01_occ"
    choices, benchmark, restored, *_ = import_case(HSV, export_case(HSV, view, 5, True))
    assert benchmark == "cuhk01_occ" and restored["query_index"] == view["query_index"]
    assert len(choices["choices"]) == 972


def test_unknown_benchmarks_are_refused():
    with pytest.raises(gr.Error, match="Unknown benchmark 'market1501'; the app offers pets09_occ"):
        switch_benchmark(HSV, "market1501")


def test_failure_table_with_model_b_counts_the_disagreements():
    table, _, _, note, _, _ = failures(CHECKPOINT, "all", 0, False, HSV, "all", None)
    a, b = state.explorer_for(CHECKPOINT), state.explorer_for(HSV)
    right_a, right_b = a.metrics().first_true_rank == 1, b.metrics().first_true_rank == 1
    expected = int((right_a & ~right_b).sum())
    assert (table["A vs B"] == "A right, B wrong").sum() == expected
    assert f"A right, B wrong {expected}" in note and f"| **A right** | {int((right_a & right_b).sum())} |" in (
        disagreement(a, b)
    )
    only = failures(CHECKPOINT, "all", 0, False, HSV, "A wrong, B right", None)[0]
    assert len(only) == int((~right_a & right_b).sum())
    assert (only["first true rank"] != 1).all() and (only["B first true rank"] == 1).all()


def test_thumbnails_filter_by_phrase_and_keep_failures_first():
    items, note, shown = query_thumbnails(CHECKPOINT, "pole", False, None)
    indices = shown["queries"]
    explorer = state.explorer_for(CHECKPOINT)
    assert shown["benchmark"] == "pets09_occ"
    assert indices and all(explorer.split.query[i].meta["occluder"] == "pole" for i in indices)
    aps = explorer.metrics().ap[indices]
    assert list(aps) == sorted(aps) and len(items) == len(indices) and f"{len(indices)} queries" in note
    person = query_thumbnails(CHECKPOINT, "person 3", True, None)[2]["queries"]
    assert person and all(explorer.split.query[i].pid == 3 for i in person)
    assert all(explorer.metrics().first_true_rank[i] != 1 for i in person)
    nothing = query_thumbnails(CHECKPOINT, "no such words", False, None)
    assert nothing[0] == [] and "No query" in nothing[1]


def test_a_picture_opens_its_query_and_pictures_of_another_benchmark_are_refused(cuhk01_view):
    shown = query_thumbnails(CHECKPOINT, "pole", False, None)[2]  # pets09_occ pictures

    class Clicked:  # what Gradio passes for a click on the third picture
        index = 2

    update, view, *_ = pick_thumbnail(CHECKPOINT, shown, None, Clicked())
    assert update["value"] == view["query_index"] == shown["queries"][2] and view["benchmark"] == "pets09_occ"
    with pytest.raises(gr.Error, match="out of date"):
        pick_thumbnail(CHECKPOINT, shown, cuhk01_view[1], Clicked())  # query numbers of pets09 on cuhk01_occ
    with pytest.raises(gr.Error, match="out of date"):
        pick_thumbnail(CHECKPOINT, None, None, Clicked())


def test_status_poll_sends_the_figure_once_per_drawing():
    text, figure, options, seen = training_status(None)
    assert figure is not None and figure.__class__.__name__ == "Figure"
    again = training_status(seen)
    assert again[0] == text and again[1] == gr.skip() and again[2] == gr.skip()


def test_cuhk01_map_names_repeating_colours_and_highlights_a_person(cuhk01_view):
    view = cuhk01_view[1]
    canvas, note = umap_view(HSV, view, "identity", "query")
    figure = json.loads(canvas["figure"])
    assert canvas["benchmark"] == "cuhk01_occ"
    names = [trace.get("name", "") for trace in figure["data"]]
    assert not any(name.startswith("person ") and name.split()[-1].isdigit() for name in names)  # no 486-entry legend
    assert "486 persons share" in figure["layout"]["title"]["text"]
    marked = [trace for trace in figure["data"] if trace.get("legendgroup") == "highlight"]
    explorer = state.explorer_for(HSV, "cuhk01_occ")
    own = sum(r.pid == view["pid"] for r in explorer.split.query + explorer.split.gallery)
    assert sum(len(trace["x"]) for trace in marked) == own == 4  # two camera-A and two camera-B images
    assert all(
        trace["opacity"] == 0.3
        for trace in figure["data"]
        if trace.get("legendgroup") == "kinds" and trace["name"] in ("gallery", "query")
    )
    with pytest.raises(gr.Error, match="Highlight takes a person id"):
        umap_view(HSV, view, "identity", "somebody")


def test_the_default_model_on_cuhk01_ranks_unseen_persons_and_maps_them_without_prototypes():
    _, view, *_ = switch_benchmark(CHECKPOINT, "cuhk01_occ")
    explorer = state.explorer_for(CHECKPOINT, "cuhk01_occ")
    assert explorer.prototype_gap() is None  # test persons have no prototype
    metrics = explorer.metrics()
    assert 0.55 < float((metrics.first_true_rank == 1).mean()) < 0.75  # the model card's cuhk01_occ rank-1: 65.0
    canvas, note = umap_view(CHECKPOINT, view, "identity", "")
    assert "not training identities of this model" in note
    figure = json.loads(canvas["figure"])
    assert not [trace for trace in figure["data"] if trace.get("name") == "prototype"]


def test_prototypes_map_to_persons_of_their_own_scene_only():
    from dpmpp.data.datasets.combined import PETS09_PID_OFFSET
    from dpmpp.explorer import benchmark_prototype_pids

    model = [3, 7, PETS09_PID_OFFSET + 3]  # two CUHK01 training persons and PETS09 person 3
    mapped, foreign = benchmark_prototype_pids(model, [1, 2, 3, 4], "cuhk01_pets09", "pets09_occ")
    assert foreign.tolist() == [True, True, False] and mapped[2] == 3  # CUHK01 person 3 is not PETS09 person 3
    mapped, foreign = benchmark_prototype_pids(model, [3, 8], "cuhk01_pets09", "cuhk01_occ (split 0)")
    assert foreign.tolist() == [False, True, True] and mapped[0] == 3
    assert benchmark_prototype_pids([1, 2], [1, 2], "pets09_occ", "cuhk01 (split 0)")[1].all()


def test_the_status_poll_runs_only_while_the_model_tab_is_open():
    from dpmpp.app.views.model import poll_while_open

    opened = lambda label: gr.SelectData(None, {"index": 0, "value": label, "selected": True})  # noqa: E731
    assert poll_while_open(opened("Model")).active is True
    assert poll_while_open(opened("Retrieval")).active is False
