"""Occlusion sensitivity: the map is the retrieval of each occluded copy, and it finds the region a model uses."""

import numpy as np
import pytest
from PIL import Image

from dpmpp.data.occluders import PasteParams, paste
from dpmpp.data.records import ReIDRecord, Split
from dpmpp.explorer import BenchmarkExplorer
from dpmpp.paths import ASSETS
from dpmpp.sensitivity import grey_block, grid_positions, occlusion_sensitivity, person_occluder
from dpmpp.viz.sensitivity import sensitivity_figure

CROPS = ASSETS / "pets09_occ" / "crops"


class TopHalfColour:
    """A model that looks only at the upper half of a crop: a 2x4 thumbnail of it, centred on mid-grey."""

    name = "top-half colour"

    def embed(self, images) -> np.ndarray:
        rows = []
        for image in images:
            picture = Image.open(image).convert("RGB") if isinstance(image, str) else image
            top = picture.crop((0, 0, picture.width, picture.height // 2)).resize((2, 4), Image.BOX)
            rows.append(np.asarray(top, np.float32).ravel() / 255.0 - 0.5)
        features = np.array(rows, np.float32)
        return features / np.linalg.norm(features, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def explorer():
    gallery = sorted((CROPS / "gallery").glob("*.jpg"))
    pids = sorted({int(p.name[1:3]) for p in gallery})[:4]
    chosen = [p for pid in pids for p in [g for g in gallery if int(g.name[1:3]) == pid][:12]]
    records = [ReIDRecord(str(p), int(p.name[1:3]), 1 + i % 2) for i, p in enumerate(chosen)]
    query = [ReIDRecord(str(sorted((CROPS / "query").glob(f"P{pid:02d}_*.jpg"))[0]), pid, 0) for pid in pids]
    return BenchmarkExplorer(Split([], query, records, "tiny"), embedder=TopHalfColour())


def test_grid_positions_are_cell_centres_and_bounded():
    xs, ys = grid_positions(4, 2)
    np.testing.assert_allclose(xs, [0.25, 0.75])
    np.testing.assert_allclose(ys, [0.125, 0.375, 0.625, 0.875])
    with pytest.raises(ValueError, match="positions"):
        grid_positions(100, 100)


def test_each_cell_is_the_retrieval_of_that_occluded_copy(explorer):
    query = explorer.split.query[1]
    smap = occlusion_sensitivity(explorer, query.path, query.pid, query.camid, rows=4, columns=3, scale=0.3)
    assert smap.rank.shape == smap.ap.shape == smap.covered.shape == (4, 3)
    clean = explorer.rank(explorer.scores(explorer.embed([query.path]))[0], query.pid, query.camid)
    assert (smap.clean["rank"], smap.clean["ap"]) == (clean.first_true_rank, pytest.approx(clean.ap))
    image = Image.open(query.path).convert("RGB")
    copy = paste(image, grey_block(image.height), PasteParams("x", float(smap.xs[2]), float(smap.ys[1]), 0.3))
    expected = explorer.rank(explorer.scores(explorer.embed([copy.image]))[0], query.pid, query.camid)
    assert smap.rank[1, 2] == expected.first_true_rank and smap.ap[1, 2] == pytest.approx(expected.ap)
    assert 0 < smap.covered[1, 2] == pytest.approx(copy.occluded_fraction)


def test_the_map_finds_the_half_the_model_looks_at(explorer):
    query = explorer.split.query[0]
    smap = occlusion_sensitivity(explorer, query.path, query.pid, query.camid, rows=4, columns=2, scale=0.2)
    lower = smap.score[2:]  # occluders centred below the middle leave the top half alone (scale 0.2 < 0.25)
    np.testing.assert_allclose(lower, smap.clean["score"], atol=1e-6)
    assert np.abs(smap.score[:2] - smap.clean["score"]).max() > 0.05
    assert smap.worst is not None and smap.worst[1] < 0.5


def test_another_person_as_occluder_and_bad_requests(explorer):
    query, other = explorer.split.query[0], explorer.split.query[2]
    smap = occlusion_sensitivity(
        explorer, query.path, query.pid, query.camid, person_occluder(other.path), "person", rows=2, columns=2
    )
    assert smap.occluder == "person" and np.isfinite(smap.ap).all()
    with pytest.raises(ValueError, match="scale"):
        occlusion_sensitivity(explorer, query.path, query.pid, query.camid, scale=0)
    with pytest.raises(ValueError, match="no crop of identity 99"):
        occlusion_sensitivity(explorer, query.path, 99, 0)


def test_figure_overlays_the_query_with_one_shared_colour_scale(explorer):
    query = explorer.split.query[0]
    maps = []
    for name, scale in (("A", 0.2), ("B", 0.4)):
        smap = occlusion_sensitivity(explorer, query.path, query.pid, query.camid, rows=3, columns=2, scale=scale)
        smap.model = name
        maps.append(smap)
    image = np.asarray(Image.open(query.path).convert("RGB"))
    figure = sensitivity_figure(image, maps, "AP")
    heatmaps = [t for t in figure.data if t.type == "heatmap"]
    assert [t.type for t in figure.data] == ["image", "heatmap", "image", "heatmap"]
    assert all((t.zmin, t.zmax) == (0.0, 1.0) for t in heatmaps)  # AP: one fixed scale for both models
    assert [t.showscale for t in heatmaps] == [False, True]
    assert max(heatmaps[0].y) < image.shape[0] and max(heatmaps[0].x) < image.shape[1]
    ranks = [t for t in sensitivity_figure(image, maps, "rank").data if t.type == "heatmap"]
    assert ranks[0].zmin == ranks[1].zmin and ranks[0].zmax == ranks[1].zmax
    with pytest.raises(ValueError, match="metric"):
        sensitivity_figure(image, maps, "nope")
