"""The paired intervals of `bench events`: a two-level bootstrap over training seeds and occlusion events."""

import numpy as np
import pytest

from dpmpp.bench.events import hierarchical_bootstrap, paired_bootstrap, paired_by_seed


def clustered_scores(
    rng: np.random.Generator, events: int, seeds: int, seed_spread: float, event_spread: float = 10.0
) -> tuple:
    """Per-query scores [S, Q] of a row and a reference, and events [Q]: an effect per event, one per seed."""
    sizes = rng.integers(1, 12, size=events)
    event_of_query = np.repeat(np.arange(events), sizes)
    per_event = rng.normal(0.0, event_spread, size=events)[event_of_query]  # [Q]
    per_seed = rng.normal(0.0, seed_spread, size=(seeds, 1))  # [S, 1]
    reference = rng.uniform(40, 60, size=(seeds, len(event_of_query)))
    row = reference + 2.0 + per_event + per_seed + rng.normal(0.0, 1.0, size=(1, len(event_of_query)))
    return row, reference, event_of_query


@pytest.mark.parametrize("weighting", ["query", "event"])
def test_without_seed_variance_it_matches_the_events_only_interval(weighting):
    rng = np.random.default_rng(0)
    row, reference, events = clustered_scores(rng, events=27, seeds=5, seed_spread=0.0)
    reference = np.repeat(reference[:1], 5, axis=0)  # every seed scores alike
    row = reference + (row - reference)[:1]
    point, low, high = hierarchical_bootstrap(row, reference, events, weighting)
    flat_point, flat_low, flat_high = paired_bootstrap(row, reference, events, weighting)
    assert point == pytest.approx(flat_point)
    assert high - low == pytest.approx(flat_high - flat_low, rel=0.05)
    assert (low, high) == pytest.approx((flat_low, flat_high), abs=0.05 * (flat_high - flat_low))


def test_large_seed_variance_and_few_events_widen_the_interval():
    rng = np.random.default_rng(1)
    row, reference, events = clustered_scores(rng, events=4, seeds=5, seed_spread=10.0, event_spread=2.0)
    _, low, high = hierarchical_bootstrap(row, reference, events)
    _, flat_low, flat_high = paired_bootstrap(row, reference, events)
    assert high - low > 2 * (flat_high - flat_low)


def test_point_is_the_mean_over_seeds_of_each_seeds_difference():
    row = np.array([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, np.nan], [0.0, 0.0, 0.0, 0.0]])
    reference = np.zeros((3, 4))
    events = np.array([0, 0, 0, 1])
    point, low, high = hierarchical_bootstrap(row, reference, events, "query", samples=2000)
    assert point == pytest.approx((0.75 + 1.0 + 0.0) / 3)
    assert low == 0.0 and high == 1.0  # all seed 2 / event 1, or seed 1 alone
    point, _, _ = hierarchical_bootstrap(row, reference, events, "event", samples=10)
    assert point == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # seed 1 has no scored query in event 1


def test_matches_a_loop_over_the_same_draws():
    rng = np.random.default_rng(2)
    row, reference, events = clustered_scores(rng, events=6, seeds=3, seed_spread=5.0)
    samples = 300
    _, low, high = hierarchical_bootstrap(row, reference, events, "query", samples=samples, seed=7)
    draws = np.random.default_rng(7)
    event_draws = draws.integers(0, 6, size=(samples, 6))  # events first, then seeds
    seed_draws = draws.integers(0, 3, size=(samples, 3))
    diff = row - reference
    values = []
    for chosen_events, chosen_seeds in zip(event_draws, seed_draws):
        queries = np.concatenate([np.flatnonzero(events == e) for e in chosen_events])
        values.append(np.mean([diff[s, queries].mean() for s in chosen_seeds]))
    assert (low, high) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])))


def test_deterministic_under_a_seed():
    rng = np.random.default_rng(3)
    row, reference, events = clustered_scores(rng, events=10, seeds=4, seed_spread=3.0)
    first = hierarchical_bootstrap(row, reference, events, seed=5)
    assert hierarchical_bootstrap(row, reference, events, seed=5) == first
    assert hierarchical_bootstrap(row, reference, events, seed=6) != first


def test_pairs_rows_on_shared_seeds_and_refuses_fewer_than_two():
    row = {"0": np.zeros(3), "1": np.ones(3), "4": np.full(3, 4.0)}
    reference = {"1": np.ones(3), "4": np.zeros(3), "7": np.zeros(3)}
    seeds, stacked_row, stacked_reference = paired_by_seed(row, reference)
    assert seeds == ["1", "4"]
    np.testing.assert_array_equal(stacked_row, [[1, 1, 1], [4, 4, 4]])
    np.testing.assert_array_equal(stacked_reference, [[1, 1, 1], [0, 0, 0]])
    with pytest.raises(ValueError, match=r"share 0 seed\(s\) \[\].*at least 2"):
        paired_by_seed({"0": np.zeros(3), "1": np.zeros(3)}, {"2": np.zeros(3), "3": np.zeros(3)})
    with pytest.raises(ValueError, match=r"share 1 seed\(s\) \['1'\]"):
        paired_by_seed({"0": np.zeros(3), "1": np.zeros(3)}, {"1": np.zeros(3)})
    with pytest.raises(ValueError, match="at least 2 paired seeds"):
        hierarchical_bootstrap(np.zeros((1, 3)), np.zeros((1, 3)), np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="shapes differ"):
        hierarchical_bootstrap(np.zeros((2, 3)), np.zeros((3, 3)), np.array([0, 0, 1]))
