"""Occlusion events: the independent units of a benchmark cut from video.

Consecutive occluded frames of one track are one pass behind an occluder, and their queries are near-duplicates:
a model gets most of them right or most of them wrong. pets09_occ's 213 queries come from 27 such passes, and
the largest holds 40. A mean over queries weights a pass by its length, and a spread over training seeds says
nothing about how few passes decide a difference. Here every per-query score is kept, passes are found from the
frame numbers, and a paired difference between two rows, on the training seeds both have, gets a confidence
interval that resamples both the seeds and the passes (a two-level bootstrap), so neither source of variation is
left out.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dpmpp.data.records import ReIDRecord

MAX_GAP = 10  # frames: a longer gap in a track's occluded queries starts a new event


def occlusion_events(records: Sequence[ReIDRecord], max_gap: int = MAX_GAP) -> np.ndarray:
    """Event index [Q] per query, in record order: same track (camid), frames at most `max_gap` apart.

    Records without a frame number (still-image benchmarks) are each their own event.
    """
    events = np.full(len(records), -1, dtype=int)
    with_frame = [i for i, r in enumerate(records) if "frame" in r.meta]
    order = sorted(with_frame, key=lambda i: (records[i].camid, int(records[i].meta["frame"])))
    current, previous = -1, None
    for i in order:
        key = (records[i].camid, int(records[i].meta["frame"]))
        if previous is None or key[0] != previous[0] or key[1] - previous[1] > max_gap:
            current += 1
        events[i], previous = current, key
    for i in range(len(records)):
        if events[i] < 0:
            current += 1
            events[i] = current
    return events


def per_query_frame(
    records: Sequence[ReIDRecord],
    ap: np.ndarray,
    first_true_rank: np.ndarray,
    top1_pid: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per query: file, identity, event, occluder (type and, for a person, its identity or -1), occluded
    fraction, AP and rank-1 (NaN if skipped), and the identity of the top-ranked gallery crop when given."""
    valid = np.asarray(first_true_rank) > 0
    frame = pd.DataFrame(
        {
            "file": [Path(r.path).name for r in records],
            "pid": [r.pid for r in records],
            "event": occlusion_events(records),
            "occluder": [r.meta.get("occluder", "") for r in records],
            "occluder_pid": [int(r.meta.get("occluder_pid") or -1) for r in records],
            "occluded": [float(r.meta.get("occluded_fraction", np.nan)) for r in records],
            "ap": np.where(valid, np.asarray(ap, dtype=float), np.nan),
            "rank1": np.where(valid, (np.asarray(first_true_rank) == 1).astype(float), np.nan),
        }
    )
    if top1_pid is not None:
        frame["top1_pid"] = np.where(valid, np.asarray(top1_pid), -1)
    return frame


def event_weighted(values: np.ndarray, events: np.ndarray) -> float:
    """Mean over events of the mean over each event's queries (NaNs, i.e. skipped queries, left out)."""
    frame = pd.DataFrame({"value": values, "event": events}).dropna()
    return float(frame.groupby("event")["value"].mean().mean())


WEIGHTINGS = ("query", "event")
RESAMPLING = ("seeds_and_events", "events")  # what a paired interval resamples; the first is the default
BOOTSTRAP_SAMPLES = 10000


def _event_sums(diff: np.ndarray, events: np.ndarray, weighting: str) -> tuple[np.ndarray, np.ndarray]:
    """Per (seed, event) numerator and denominator of the metric: [S, Q] differences (NaN: skipped) -> 2 x [S, E],
    over the E events with a scored query.

    "query": sums and counts of the valid queries; "event": each event's mean (0 where it has none) and 1 where it
    has one. A statistic over drawn events is then (w @ numerator) / (w @ denominator) for draw counts w [E].
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    ids, inverse = np.unique(np.asarray(events), return_inverse=True)
    valid = ~np.isnan(diff)
    sums, counts = np.zeros((len(diff), len(ids))), np.zeros((len(diff), len(ids)))
    np.add.at(sums, (slice(None), inverse), np.where(valid, diff, 0.0))
    np.add.at(counts, (slice(None), inverse), valid.astype(float))
    scored = counts.sum(0) > 0  # events whose queries were all skipped are no unit to resample
    sums, counts = sums[:, scored], counts[:, scored]
    if weighting == "query":
        return sums, counts
    present = counts > 0
    return np.where(present, sums / np.maximum(counts, 1.0), 0.0), present.astype(float)


def _draw_counts(rng: np.random.Generator, samples: int, size: int) -> np.ndarray:
    """How often each of `size` units is drawn in each of `samples` resamples with replacement: [samples, size]."""
    draws = rng.integers(0, size, size=(samples, size))
    counts = np.zeros((samples, size))
    np.add.at(counts, (np.arange(samples)[:, None], draws), 1.0)
    return counts


def _check_pair(row: np.ndarray, reference: np.ndarray, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    row, reference = np.atleast_2d(row).astype(float), np.atleast_2d(reference).astype(float)
    if row.shape != reference.shape or row.shape[1] != len(events):
        raise ValueError(f"shapes differ: row {row.shape}, reference {reference.shape}, events {len(events)}")
    return row, reference


def paired_bootstrap(
    row: np.ndarray,
    reference: np.ndarray,
    events: np.ndarray,
    weighting: str = "query",
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Difference `row − reference` and its 95 % interval, resampling events only (seeds averaged first).

    row, reference: [S, Q] per-query scores of the same S seeds (paired by seed) on the same Q queries.
    weighting: "query" (every query counts once: the table's metric) or "event" (every event counts once).
    The seeds are kept in every resample: seed-to-seed variation is not in the interval (see
    `hierarchical_bootstrap`).
    """
    row, reference = _check_pair(row, reference, events)
    with warnings.catch_warnings():  # a query no seed scored stays NaN ("mean of empty slice")
        warnings.simplefilter("ignore", RuntimeWarning)
        diff = np.nanmean(row - reference, axis=0, keepdims=True)  # [1, Q] seed-averaged paired difference
    numerator, denominator = (table[0] for table in _event_sums(diff, events, weighting))  # [E] each

    def statistic(weights: np.ndarray) -> np.ndarray:  # weights [..., E]: how often each event is drawn
        return (weights @ numerator) / (weights @ denominator)

    point = float(statistic(np.ones(len(numerator))))
    weights = _draw_counts(np.random.default_rng(seed), samples, len(numerator))
    low, high = np.nanpercentile(statistic(weights), [2.5, 97.5])
    return point, float(low), float(high)


def hierarchical_bootstrap(
    row: np.ndarray,
    reference: np.ndarray,
    events: np.ndarray,
    weighting: str = "query",
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Difference `row − reference` and its 95 % interval from a two-level bootstrap over seeds and events.

    row, reference: [S, Q] per-query scores (NaN: skipped query) of the same S >= 2 training seeds, row i of both
    from seed i (see `paired_by_seed`), on the same Q queries; events [Q]. Each resample draws S seeds with
    replacement, then the events (clusters of queries) with replacement, and takes the mean over the drawn seeds
    of each seed's paired difference over the drawn events; `weighting` as in `paired_bootstrap`. The point
    estimate is the mean over seeds of each seed's difference. Seeds and events are crossed, each drawn
    independently, so the interval holds both seed-to-seed and event-to-event variation (slightly conservative:
    their interaction is counted in both). The event draws come first, from the same stream as
    `paired_bootstrap`: with identical seeds the two intervals coincide.
    """
    row, reference = _check_pair(row, reference, events)
    if len(row) < 2:
        raise ValueError(f"a seed-resampling interval needs at least 2 paired seeds, got {len(row)}")
    numerator, denominator = _event_sums(row - reference, events, weighting)  # [S, E] each

    def statistic(event_weights: np.ndarray, seed_weights: np.ndarray) -> np.ndarray:
        """event_weights [B, E], seed_weights [B, S] draw counts -> [B]."""
        with np.errstate(invalid="ignore", divide="ignore"):
            per_seed = (event_weights @ numerator.T) / (event_weights @ denominator.T)  # [B, S]
        seed_weights = np.where(np.isnan(per_seed), 0.0, seed_weights)
        return (seed_weights * np.nan_to_num(per_seed)).sum(1) / seed_weights.sum(1)

    seeds, clusters = numerator.shape
    point = float(statistic(np.ones((1, clusters)), np.ones((1, seeds)))[0])
    rng = np.random.default_rng(seed)
    event_weights = _draw_counts(rng, samples, clusters)
    seed_weights = _draw_counts(rng, samples, seeds)
    with np.errstate(invalid="ignore", divide="ignore"):
        low, high = np.nanpercentile(statistic(event_weights, seed_weights), [2.5, 97.5])
    return point, float(low), float(high)


def paired_by_seed(
    row: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], minimum: int = 2
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The seeds both rows have, sorted, and their scores stacked in that order: seed -> [Q] each, to [S, Q] each.

    Raises ValueError naming both rows' seeds when they share fewer than `minimum`.
    """
    shared = sorted(set(row) & set(reference), key=_seed_key)
    if len(shared) < minimum:
        raise ValueError(
            f"the rows share {len(shared)} seed(s) {shared} (row: {sorted(row, key=_seed_key)}, reference: "
            f"{sorted(reference, key=_seed_key)}); a paired interval over seeds needs at least {minimum}"
        )
    return shared, np.stack([row[s] for s in shared]), np.stack([reference[s] for s in shared])


def _seed_key(seed: str) -> tuple[int, str]:
    return (int(seed), "") if str(seed).isdigit() else (0, str(seed))


def checkpoint_per_query(folder: str | Path, split, device: str | None = None) -> pd.DataFrame:
    """Per-query AP and rank-1 of a checkpoint on `split`, with the mask on (`ap`, `rank1`) and, for a model with
    a mask, off (`ap_no_mask`, `rank1_no_mask`)."""
    from dpmpp.api import Pipeline
    from dpmpp.eval.extract import evaluate_similarity, top_match_pids

    pipeline = Pipeline.from_checkpoint(folder, device)
    query, gallery = pipeline.embed_records(split.query), pipeline.embed_records(split.gallery)
    sim = np.asarray(pipeline.similarity(query, gallery, use_mask=True))
    masked = evaluate_similarity(split, sim)
    frame = per_query_frame(split.query, masked.ap, masked.first_true_rank, top_match_pids(split, sim))
    if pipeline.has_mask:
        sim = np.asarray(pipeline.similarity(query, gallery, use_mask=False))
        plain = evaluate_similarity(split, sim)
        unmasked = per_query_frame(split.query, plain.ap, plain.first_true_rank, top_match_pids(split, sim))
        frame["ap_no_mask"], frame["rank1_no_mask"] = unmasked["ap"], unmasked["rank1"]
        frame["top1_pid_no_mask"] = unmasked["top1_pid"]
    return frame


def load_per_query(folder: Path) -> dict[tuple[str, str], pd.DataFrame]:
    """(method, seed) -> per-query frame, from the CSVs `bench accuracy` writes (one per trained row and seed)."""
    out = {}
    for path in sorted(Path(folder).glob("*.csv")):
        frame = pd.read_csv(path)
        out[(str(frame["method"].iloc[0]), str(frame["seed"].iloc[0]))] = frame
    return out


def with_mask_off(per_query: dict[tuple[str, str], pd.DataFrame], of: str) -> dict[tuple[str, str], pd.DataFrame]:
    """`per_query` plus row `of`'s checkpoints scored with the test-time mask off, named "<of>, test-time mask off"."""
    frames = dict(per_query)
    for (method, seed), frame in per_query.items():
        if of and method == of and "ap_no_mask" in frame:
            off = frame.assign(ap=frame["ap_no_mask"], rank1=frame["rank1_no_mask"])
            if "top1_pid_no_mask" in frame:
                off = off.assign(top1_pid=frame["top1_pid_no_mask"])
            else:
                off = off.drop(columns=["top1_pid"], errors="ignore")
            frames[(f"{of}, test-time mask off", seed)] = off
    return frames


def event_table(
    per_query: dict[tuple[str, str], pd.DataFrame],
    reference: str,
    mask_off_of: str = "",
    resample: str = RESAMPLING[0],
    samples: int = BOOTSTRAP_SAMPLES,
) -> str:
    """Markdown: each row's paired difference to `reference` on the seeds both have, by query and by event, with
    95 % intervals; `mask_off_of` adds that row's checkpoints with the test-time mask off.

    resample: "seeds_and_events" (`hierarchical_bootstrap`; a row sharing one seed with `reference` gets the
    events-only interval, marked †) or "events" (`paired_bootstrap`). The first line states the method.
    """
    if resample not in RESAMPLING:
        raise ValueError(f"resample must be one of {RESAMPLING}, got {resample!r}")
    frames = with_mask_off(per_query, mask_off_of)
    method_line = {
        "seeds_and_events": f"Paired 95 % intervals, two-level bootstrap ({samples} resamples): the seeds both rows "
        "share, then the occlusion events, each drawn with replacement; † one shared seed: events only, "
        "no seed variation in the interval.",
        "events": f"Paired 95 % intervals, events-only bootstrap ({samples} resamples): the occlusion events drawn "
        "with replacement after averaging over the seeds both rows share; no seed variation in the interval.",
    }[resample]
    lines = [
        method_line,
        "",
        f"| row − {reference} | seeds | Δ rank-1, by query | Δ mAP, by query | Δ rank-1, by event | Δ mAP, by event |",
        "|---|---|---|---|---|---|",
    ]
    methods = dict.fromkeys(m for m, _ in frames)
    references = {s: frame for (m, s), frame in frames.items() if m == reference}
    for method in methods:
        rows = {s: frame for (m, s), frame in frames.items() if m == method}
        if method == reference or not set(rows) & set(references):
            continue
        scores = {  # key -> (shared seeds, row [S, Q], reference [S, Q]), in points
            key: paired_by_seed(
                {s: f[key].to_numpy() * 100 for s, f in rows.items()},
                {s: f[key].to_numpy() * 100 for s, f in references.items()},
                minimum=1,
            )
            for key in ("rank1", "ap")
        }
        seeds = scores["rank1"][0]
        events = references[seeds[0]]["event"].to_numpy()
        hierarchical = resample == "seeds_and_events" and len(seeds) >= 2
        interval = hierarchical_bootstrap if hierarchical else paired_bootstrap
        mark = "†" if resample == "seeds_and_events" and not hierarchical else ""
        cells = []
        for weighting in WEIGHTINGS:
            for key in ("rank1", "ap"):
                point, low, high = interval(scores[key][1], scores[key][2], events, weighting, samples)
                cells.append(f"{point:+.1f} [{low:+.1f}, {high:+.1f}]{mark}")
        lines.append(f"| {method} | {', '.join(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def occluder_table(per_query: dict[tuple[str, str], pd.DataFrame], mask_off_of: str = "") -> str:
    """Markdown: on the queries hidden behind another person, how often each row finds the person and how often
    its top match is the occluding person instead (means over seeds, ± std). Frames without `top1_pid` (written
    before it was recorded) are left out."""
    lines = [
        "| row | seeds | queries | rank-1 | top match is the occluder | misses that are the occluder |",
        "|---|---|---|---|---|---|",
    ]
    methods: dict[str, list[tuple[int, float, float, float]]] = {}
    for (method, _), frame in with_mask_off(per_query, mask_off_of).items():
        if "top1_pid" not in frame or "occluder_pid" not in frame:
            continue
        behind = frame[(frame["occluder_pid"] > 0) & frame["rank1"].notna()]
        occluder = (behind["top1_pid"] == behind["occluder_pid"]).to_numpy(float)
        hit = behind["rank1"].to_numpy(float)
        misses = occluder[hit == 0].mean() if (hit == 0).any() else np.nan
        methods.setdefault(method, []).append((len(behind), hit.mean(), occluder.mean(), misses))
    for method, values in methods.items():
        counts, *columns = zip(*values)
        cells = [_mean_std(100 * np.array(column)) for column in columns]
        queries = str(counts[0]) if len(set(counts)) == 1 else f"{min(counts)}–{max(counts)}"
        lines.append(f"| {method} | {len(values)} | {queries} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BEHIND_BINS = (0.15, 0.3, 0.5, 0.7, 1.0)


def occluder_bins_table(per_query: dict[tuple[str, str], pd.DataFrame], method: str) -> str:
    """Markdown: for row `method`, the queries behind another person by the fraction hidden: how many, rank-1, and
    how often the top match is the occluding person (means over the row's seeds)."""
    frames = [f for (m, _), f in per_query.items() if m == method and "top1_pid" in f and "occluder_pid" in f]
    lines = [
        f"| {method}: fraction hidden by a person | queries | rank-1 | top match is the occluder |",
        "|---|---|---|---|",
    ]
    if not frames:
        return "\n".join(lines)
    for low, high in zip(BEHIND_BINS[:-1], BEHIND_BINS[1:]):
        last = high == BEHIND_BINS[-1]
        parts = []
        for frame in frames:
            hidden = frame["occluded"]
            inside = (frame["occluder_pid"] > 0) & (hidden >= low) & ((hidden <= high) if last else (hidden < high))
            part = frame[inside & frame["rank1"].notna()]
            parts.append((len(part), part["rank1"].mean(), (part["top1_pid"] == part["occluder_pid"]).mean()))
        count, rank1, occluder = (np.array(column, dtype=float) for column in zip(*parts))
        closing = "]" if last else ")"
        cells = f"{100 * np.nanmean(rank1):.1f} | {100 * np.nanmean(occluder):.1f}" if count.sum() > 0 else "– | –"
        lines.append(f"| [{low:.2f}, {high:.2f}{closing} | {int(count[0])} | {cells} |")
    return "\n".join(lines)


def _mean_std(values: np.ndarray) -> str:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return "–"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1 else f"{values.mean():.1f}"
