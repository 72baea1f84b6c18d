"""The explorer remembers what it embedded by the pixels' content: the views of one query embed it once, a changed
image is embedded anew, and the memory is bounded."""

import numpy as np
import pytest
from PIL import Image

from dpmpp import explorer as explorer_module
from dpmpp.data.images import load_image
from dpmpp.data.records import ReIDRecord, Split
from dpmpp.explorer import BenchmarkExplorer
from dpmpp.paths import ASSETS

CROPS = ASSETS / "pets09_occ" / "crops"


class CountingColour:
    """Mean colour of the crop's top and bottom halves, counting the images it is asked to embed."""

    name = "counting colour"

    def __init__(self) -> None:
        self.embedded = 0

    def embed(self, images) -> np.ndarray:
        self.embedded += len(images)
        rows = []
        for image in images:
            pixels = np.asarray(Image.open(image).convert("RGB") if isinstance(image, str) else image, np.float32)
            half = len(pixels) // 2
            rows.append(np.concatenate([pixels[:half].mean((0, 1)), pixels[half:].mean((0, 1))]) / 255.0 + 0.01)
        features = np.array(rows, np.float32)
        return features / np.linalg.norm(features, axis=1, keepdims=True)


@pytest.fixture
def explorer():
    gallery = sorted((CROPS / "gallery").glob("*.jpg"))[:20]
    query = sorted((CROPS / "query").glob("*.jpg"))[:3]
    records = lambda paths: [ReIDRecord(str(p), int(p.name[1:3]), 1) for p in paths]
    return BenchmarkExplorer(Split([], records(query), records(gallery), "tiny"), embedder=CountingColour())


def test_an_image_is_embedded_once_and_its_rows_keep_their_order(explorer):
    images = [np.asarray(load_image(r.path)) for r in explorer.split.query]
    counter = explorer.embedder
    counter.embedded = 0
    first = explorer.embed(images[:2])
    assert counter.embedded == 2
    mixed = explorer.embed([images[1], explorer.split.query[2].path, images[0]])  # a path is never remembered
    assert counter.embedded == 3
    np.testing.assert_allclose(mixed.features[[0, 2]], first.features[[1, 0]])
    np.testing.assert_allclose(mixed.features[1], explorer.model.embed([images[2]]).features[0], atol=1e-6)
    explorer.embed([Image.fromarray(images[0])])  # the same pixels as a PIL image
    assert counter.embedded == 4  # (the reference embedding above); the PIL copy was remembered


def test_a_changed_image_is_embedded_anew(explorer):
    image = np.asarray(load_image(explorer.split.query[0].path)).copy()
    before = explorer.embed([image]).features[0]
    image[: len(image) // 2] = 0  # the same array object, occluded in place
    after = explorer.embed([image]).features[0]
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, explorer.model.embed([image]).features[0])


def test_a_benchmark_query_reuses_its_precomputed_embedding(explorer):
    image = np.asarray(load_image(explorer.split.query[1].path))
    explorer.remember_query(image, 1)
    counter = explorer.embedder
    counter.embedded = 0
    np.testing.assert_array_equal(explorer.embed([image]).features[0], explorer.query.features[1])
    assert counter.embedded == 0


def test_the_memory_is_bounded(explorer, monkeypatch):
    monkeypatch.setattr(explorer_module, "EMBEDDING_MEMO", 5)
    base = np.asarray(load_image(explorer.split.query[0].path))
    for shade in range(12):
        explorer.embed([np.clip(base.astype(int) + shade, 0, 255).astype(np.uint8)])
    assert len(explorer._memo) == 5


@pytest.mark.parametrize("seed", range(5))
def test_best_matches_are_the_first_true_and_first_wrong_items_of_the_ranking(explorer, seed):
    rng = np.random.default_rng(seed)
    explorer.g_camids = rng.integers(0, 3, len(explorer.g_pids))  # some same-person-same-camera items get hidden
    scores = rng.integers(0, 6, len(explorer.g_pids)).astype(np.float32)  # ties, broken as the ranking breaks them
    for pid in sorted(set(explorer.g_pids.tolist())) + [999]:
        for camid in (0, 1, 2):
            ranked = explorer.rank(scores, pid, camid, top_k=len(scores)).items
            true = next((i.gallery_index for i in ranked if i.correct), None)
            wrong = next((i.gallery_index for i in ranked if i.correct is False), None)
            assert explorer.best_matches(scores, pid, camid) == (true, wrong)
