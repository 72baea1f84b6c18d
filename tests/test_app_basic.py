"""The explorer behind the app agrees with the metric, and the app's retrieve handler renders it."""

import math

import numpy as np
import pytest

from dpmpp.data.datasets import load_split
from dpmpp.eval.baseline_eval import evaluate_baseline
from dpmpp.explorer import BenchmarkExplorer
from dpmpp.paths import ASSETS


@pytest.fixture(scope="module")
def explorer():
    return BenchmarkExplorer(load_split("pets09_occ", ASSETS / "pets09_occ"))


def test_per_query_ap_and_first_rank_match_the_metric(explorer):
    metrics = evaluate_baseline("hsv", explorer.split)
    for index in range(0, len(explorer.split.query), 7):
        result = explorer.retrieve(index, top_k=10)
        assert result.ap == pytest.approx(metrics.ap[index])
        assert result.first_true_rank == metrics.first_true_rank[index]
        query = explorer.split.query[index]
        assert all(not (item.pid == query.pid and item.camid == query.camid) for item in result.items)
        assert result.hidden == sum(r.pid == query.pid and r.camid == query.camid for r in explorer.split.gallery)
        assert [item.score for item in result.items] == sorted((item.score for item in result.items), reverse=True)
        # the displayed ranking and the metric agree on where the first true match is
        correct = [item.correct for item in result.items]
        if 0 < result.first_true_rank <= 10:
            assert correct.index(True) == result.first_true_rank - 1
        else:
            assert not any(correct)


def test_query_table_names_the_top_match_and_the_person_in_front(explorer):
    table = explorer.query_table()
    for index in range(0, len(explorer.split.query), 5):
        assert table["top match"][index] == explorer.retrieve(index, top_k=1).items[0].pid
    behind = table["occluder"] == "person"
    assert behind.any() and table.loc[behind, "occluding person"].notna().all()
    assert table.loc[~behind, "occluding person"].isna().all()
    assert (table.loc[behind, "occluding person"] != table.loc[behind, "person"]).all()
    # on a miss behind a person, the table can say whether the model found the occluder instead
    misses = behind & (table["first true rank"] != 1)
    assert (table.loc[misses, "top match"] != table.loc[misses, "person"]).all()


def test_retrieve_handler_renders_a_strip():
    from dpmpp.app.layout import build_demo
    from dpmpp.app.state import explorer_for
    from dpmpp.app.views.picker import query_choices

    demo = build_demo(None)
    assert demo is not None
    choices = query_choices(explorer_for(None))
    aps = [float(label.split()[1]) for label, _ in choices]
    assert aps == sorted(aps)  # failures first
    explorer = explorer_for(None)
    result = explorer.retrieve(choices[0][1], top_k=10)
    assert len(result.items) == 10 and not math.isnan(result.ap)
    from dpmpp.viz.rank_strip import GREEN, RED, rank_strip

    strip = np.asarray(rank_strip(result.query_path, [(i.path, i.correct, i.score) for i in result.items]))
    assert strip.shape[1] > 10 * 64
    first_tile_border = tuple(
        strip[16 + 2, 72 + 10 + 2]
    )  # top border of rank 1 (16 px header; query tile 72 px + 10 px gap)
    assert first_tile_border == (GREEN if result.items[0].correct else RED)


def test_mask_analysis_on_the_bundled_model():
    from dpmpp.api import Pipeline
    from dpmpp.bench.masks import analyse, format_report
    from dpmpp.paths import DEFAULT_CHECKPOINT

    explorer = BenchmarkExplorer(
        load_split("pets09_occ", ASSETS / "pets09_occ"), Pipeline.from_checkpoint(DEFAULT_CHECKPOINT, device="cpu")
    )
    result = analyse(explorer)
    table = result["table"]
    assert result["queries"] == len(explorer.split.query) == len(table)
    assert table["active_fraction"].between(0, 1).all() and (table["distance_to_clean"] >= 0).all()
    assert -1 <= result["spearman_distance_vs_occlusion"][0] <= 1
    assert {row["occluder"] for row in result["by_occluder"]} == {"person", "pole", "sign"}
    assert "Spearman" in format_report(result)


@pytest.mark.parametrize("split_name", ["pets09_occ", "pets09_holistic"])
def test_eval_of_the_bundled_model_reproduces_its_recorded_numbers(split_name, capsys):
    """`python -m dpmpp eval --checkpoint <bundled> --data <split> --json` gives the figures the README quotes,
    which are the final evaluation recorded in the checkpoint's metrics.json."""
    import json

    from dpmpp.cli import main
    from dpmpp.paths import DEFAULT_CHECKPOINT

    recorded = json.loads((DEFAULT_CHECKPOINT / "metrics.json").read_text())["final"][split_name]
    for flag, mode in (([], "masked"), (["--no-mask"], "unmasked")):
        args = ["eval", "--checkpoint", str(DEFAULT_CHECKPOINT), "--data", split_name, "--json", "--device", "cpu"]
        assert main(args + flag) == 0
        printed = json.loads(capsys.readouterr().out)
        for key in ("rank1", "mAP", "mINP", "num_query", "num_gallery"):
            assert printed[key] == pytest.approx(recorded[mode][key], abs=1e-6), (mode, key)


def test_cached_captions_draw_the_same_pixels_as_pillow():
    from PIL import Image, ImageDraw

    from dpmpp.viz.rank_strip import RED, _caption, _font

    for text in ("#1", "0.614", "-0.052", "P03"):
        drawn, cached = Image.new("RGB", (90, 40), "white"), Image.new("RGB", (90, 40), "white")
        ImageDraw.Draw(drawn).text((3, 5), text, fill=RED, font=_font(21))
        _caption(cached, (3, 5), text, RED, 21)
        assert drawn.tobytes() == cached.tobytes(), text
        assert len(set(drawn.getdata())) > 2, text  # anti-aliased ink was drawn at all


def test_warming_the_strips_reads_the_crops_the_first_rankings_show():
    from dpmpp.app.views import retrieval
    from dpmpp.app.views.picker import select_query
    from dpmpp.paths import DEFAULT_CHECKPOINT
    from dpmpp.viz.rank_strip import _gallery_crop

    checkpoint = str(DEFAULT_CHECKPOINT)
    _gallery_crop.cache_clear()
    read = retrieval.warm(checkpoint)
    assert 50 < read <= _gallery_crop.cache_info().maxsize and read == _gallery_crop.cache_info().currsize
    misses = _gallery_crop.cache_info().misses
    retrieval.retrieve(checkpoint, select_query(checkpoint, 0)[0], 10, True)
    assert _gallery_crop.cache_info().misses == misses  # the query's top-10 was read at warm-up


def test_mask_image_dependence_separates_the_shared_weighting_from_the_per_image_part():
    """A generator whose final layer ignores the image gives one mask for every image: no move with occlusion and
    no per-image logits. The trained one moves, and its reported logits are the ones behind its masks."""
    import torch

    from dpmpp.api import Pipeline
    from dpmpp.bench.masks import format_dependence, image_dependence
    from dpmpp.paths import PETS09_CHECKPOINT

    clean = load_split("cuhk01", ASSETS / "cuhk01").query[:6]
    occluded = load_split("cuhk01_occ", ASSETS / "cuhk01").query[:6]
    pipeline = Pipeline.from_checkpoint(PETS09_CHECKPOINT, device="cpu")
    trained = image_dependence(pipeline, clean, occluded)
    assert 0 < trained["mask_min"] <= trained["mask_max"] < 1
    assert trained["move_with_occlusion"] > 0 and trained["distance_to_other_person"] > 0
    assert trained["per_image_logit_spread"] > 0 and trained["input_spread"] > 0
    assert "% of the shared spread" in format_dependence(trained)

    fc = pipeline.model.mask_generator.fc
    bias = torch.linspace(-2, 2, fc.out_features)
    with torch.no_grad():
        fc.weight.zero_()
        fc.bias.copy_(bias)
    constant = image_dependence(pipeline, clean, occluded)
    assert constant["move_with_occlusion"] == constant["distance_to_other_person"] == 0
    assert constant["per_image_logit_spread"] < 1e-6
    assert constant["shared_logit_spread"] == pytest.approx(bias.std(unbiased=False).item(), rel=1e-3)
    assert constant["mask_min"] == pytest.approx(torch.sigmoid(torch.tensor(-2.0)).item(), abs=1e-5)

    with pytest.raises(ValueError, match="occluded copy"):
        image_dependence(pipeline, clean, occluded[::-1])
