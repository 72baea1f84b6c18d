"""The on-disk embedding cache: a second explorer of the same checkpoint and split embeds nothing, and changed
weights, a damaged entry or too many entries are handled."""

import numpy as np
import pytest

from dpmpp import embedding_cache
from dpmpp.api import Pipeline
from dpmpp.data.datasets import load_split
from dpmpp.explorer import BenchmarkExplorer
from dpmpp.paths import PETS09_CHECKPOINT


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DPMPP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "embeddings"


@pytest.fixture
def pipeline():
    return Pipeline.from_checkpoint(PETS09_CHECKPOINT)


@pytest.fixture
def pets09_split(small_data):
    return load_split("manifest", small_data)


def counting(pipeline):
    calls = []
    original = pipeline.embed

    def embed(images, *args, **kwargs):
        calls.append(len(images))
        return original(images, *args, **kwargs)

    pipeline.embed = embed
    return calls


def test_a_second_explorer_of_the_same_weights_embeds_nothing(cache, pipeline, pets09_split):
    calls = counting(pipeline)
    first = BenchmarkExplorer(pets09_split, pipeline)
    assert sum(calls) == len(pets09_split.query) + len(pets09_split.gallery)
    assert len(list(cache.glob("*.npz"))) == 2
    calls.clear()
    again = BenchmarkExplorer(pets09_split, Pipeline.from_checkpoint(pipeline.folder))
    assert np.array_equal(again.gallery.features, first.gallery.features)
    assert np.array_equal(again.query.masks, first.query.masks)
    assert calls == []


def test_changed_weights_or_a_damaged_entry_are_embedded_again(cache, pipeline, pets09_split, tmp_path):
    BenchmarkExplorer(pets09_split, pipeline)
    for entry in cache.glob("*.npz"):
        entry.write_bytes(b"not an npz")
    calls = counting(pipeline)
    BenchmarkExplorer(pets09_split, pipeline)
    assert sum(calls) == len(pets09_split.query) + len(pets09_split.gallery)  # recomputed, not an error

    other = Pipeline.from_checkpoint(pipeline.folder)
    other._model_digest = "other weights"
    calls = counting(other)
    BenchmarkExplorer(pets09_split, other)
    assert sum(calls) > 0
    assert len(list(cache.glob("*.npz"))) == 4


def test_the_cache_keeps_at_most_its_bound_and_evaluation_never_uses_it(cache, pipeline, pets09_split, monkeypatch):
    monkeypatch.setattr(embedding_cache, "MAX_ENTRIES", 3)
    for index in range(5):
        embedding_cache.store(f"k{index}", np.zeros((2, 4), np.float32), None)
    assert sorted(p.stem for p in cache.glob("*.npz")) == ["k2", "k3", "k4"]
    calls = counting(pipeline)
    pipeline.evaluate_split(pets09_split)
    pipeline.evaluate_split(pets09_split)
    assert sum(calls) == 2 * (len(pets09_split.query) + len(pets09_split.gallery))
