"""Accuracy on pets09_occ by how near each query is to the training crops of its own track.

A query's track is also in training: its nearest training crop of the same track is 11 to 48 frames away (the
guard is 10 frames), for 47 of the 213 queries hidden by the same kind of occluder (29 within 20 frames: the same
pass behind the sign or post, split by a chunk boundary), while a true gallery match, from another track, is at
least 83 frames away. A model trained on these ten persons may win by recalling such near-duplicates rather than
by re-identifying. Here every query gets its frame distance to the nearest training crop of its track
(`nearest_train`, and whether that crop is hidden by the same kind of occluder) and to the nearest training crop
of its track hidden by the same kind of occluder (`nearest_same_pass`: the same pass when near; by kind alone,
so it errs toward counting more near-duplicates). Rank-1 and mAP are reported per distance bin, and on the
queries with and without a same-pass training crop within G frames, for DPM++ checkpoints (masked similarity, as
`eval` scores them) and zero-shot pretrained peers, which never saw these persons and so show how hard each
subset is without memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dpmpp.atomic import write_text
from dpmpp.bench.events import checkpoint_per_query, occlusion_events, per_query_frame
from dpmpp.data.datasets import load_split
from dpmpp.data.datasets.pets09 import frame_gap
from dpmpp.data.records import ReIDRecord, Split
from dpmpp.eval.extract import evaluate_similarity, top_match_pids
from dpmpp.paths import DEFAULT_CHECKPOINT, default_root

BIN_EDGES = (20, 30, 48)  # upper ends (frames, inclusive) of the distance bins; a last bin holds anything farther
CLEAR_OF = (25, 35)  # subsets: a same-pass training crop within G frames, or none
DEFAULT_PEERS = ("omz-0277", "osnet-x0.25-msmt17")
ALL = "all"
BOOTSTRAP_SAMPLES = 2000


def bin_labels(edges: Sequence[int] = BIN_EDGES) -> list[str]:
    lows = [0, *(edge + 1 for edge in edges)]
    return [f"<= {edges[0]}", *(f"{low}-{high}" for low, high in zip(lows[1:], edges[1:])), f"> {edges[-1]}"]


def distance_bin(distance: float, edges: Sequence[int] = BIN_EDGES) -> str:
    """The label of the bin holding `distance` (frames): exactly one for any number, infinity included."""
    labels = bin_labels(edges)
    for edge, label in zip(edges, labels):
        if distance <= edge:
            return label
    return labels[-1]


def _same_kind(record: ReIDRecord, occluder: str) -> bool:
    return float(record.meta.get("occluded_fraction", 0.0)) > 0 and record.meta.get("occluder") == occluder


def query_proximity(split: Split, edges: Sequence[int] = BIN_EDGES) -> pd.DataFrame:
    """One row per query, in query order: its track and frame, occluder, the frame distance to the nearest
    training crop of its track (inf when the track has none) with that crop's occluder, and the distance to the
    nearest training crop of its track hidden by the same kind of occluder (inf when none). Of two crops equally
    near, the earlier names the occluder, and either hidden by the query's kind makes `nearest_same_occluder`."""
    frames_of: dict[int, dict[int, ReIDRecord]] = {}
    for record in split.train:
        frames_of.setdefault(record.camid, {})[int(record.meta["frame"])] = record
    rows = []
    for query, event in zip(split.query, occlusion_events(split.query)):
        frame, occluder = int(query.meta["frame"]), query.meta.get("occluder", "")
        track = frames_of.get(query.camid, {})
        nearest = frame_gap(frame, sorted(track))
        tied = [] if nearest is None else [track[f] for f in (frame - nearest, frame + nearest) if f in track]
        same = frame_gap(frame, sorted(f for f, r in track.items() if _same_kind(r, occluder)))
        distance = math.inf if nearest is None else float(nearest)
        rows.append(
            {
                "file": Path(query.path).name,
                "pid": query.pid,
                "track": query.camid,
                "frame": frame,
                "occluder": occluder,
                "event": int(event),
                "nearest_train": distance,
                "nearest_train_occluder": tied[0].meta.get("occluder", "") if tied else "",
                "nearest_same_occluder": any(_same_kind(r, occluder) for r in tied),
                "nearest_same_pass": math.inf if same is None else float(same),
                "bin": distance_bin(distance, edges),
            }
        )
    return pd.DataFrame(rows)


def subsets(
    proximity: pd.DataFrame, edges: Sequence[int] = BIN_EDGES, clear_of: Sequence[int] = CLEAR_OF
) -> dict[str, np.ndarray]:
    """Named boolean masks over the queries: all, each distance bin of `edges` (in order, empty ones too; the
    `bin` column must come from the same edges), and for each G the queries with a same-pass training crop within
    G frames and those without."""
    out = {ALL: np.ones(len(proximity), dtype=bool)}
    for label in bin_labels(edges):
        out[f"nearest {label}"] = (proximity["bin"] == label).to_numpy()
    for gap in clear_of:
        clear = (proximity["nearest_same_pass"] > gap).to_numpy()
        out[f"same pass <= {gap}"], out[f"no same pass <= {gap}"] = ~clear, clear
    return out


def peer_per_query(name: str, split: Split) -> pd.DataFrame:
    """Per-query AP and rank-1 of a pretrained peer: unit features, cosine similarity."""
    from dpmpp.model.peers import load_peer

    peer = load_peer(name)
    query = peer.embed([r.path for r in split.query])
    gallery = peer.embed([r.path for r in split.gallery])
    sim = query @ gallery.T
    metrics = evaluate_similarity(split, sim)
    return per_query_frame(split.query, metrics.ap, metrics.first_true_rank, top_match_pids(split, sim))


def summarise(
    proximity: pd.DataFrame,
    scores: dict[str, pd.DataFrame],
    edges: Sequence[int] = BIN_EDGES,
    clear_of: Sequence[int] = CLEAR_OF,
) -> pd.DataFrame:
    """One row per (model, subset): queries, occlusion events, rank-1 and mAP (fractions) over the subset."""
    rows = []
    for model, frame in scores.items():
        for subset, mask in subsets(proximity, edges, clear_of).items():
            chosen = frame[mask]
            rows.append(
                {
                    "model": model,
                    "subset": subset,
                    "queries": int(mask.sum()),
                    "events": int(chosen["event"].nunique()),
                    "rank1": float(chosen["rank1"].mean()) if len(chosen) else math.nan,
                    "mAP": float(chosen["ap"].mean()) if len(chosen) else math.nan,
                }
            )
    return pd.DataFrame(rows)


def memory_gain(
    model: np.ndarray,
    peer: np.ndarray,
    near: np.ndarray,
    events: np.ndarray,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(model − peer) on the `near` queries minus (model − peer) on the others, and its 95 % interval.

    `model`, `peer`: per-query scores [Q] (NaN: skipped, left out); `near` [Q] bool; `events` [Q] occlusion events.
    The interval resamples events with replacement (a pass's queries move together). Positive: the model gains more
    than the peer where a near-duplicate was in its training data.
    """
    diff = np.asarray(model, dtype=float) - np.asarray(peer, dtype=float)
    scored = ~np.isnan(diff)
    ids, inverse = np.unique(np.asarray(events), return_inverse=True)
    sums = np.zeros((2, len(ids)))
    counts = np.zeros((2, len(ids)))
    group = np.asarray(near, dtype=bool).astype(int)  # 1: near, 0: the rest
    np.add.at(sums, (group[scored], inverse[scored]), diff[scored])
    np.add.at(counts, (group[scored], inverse[scored]), 1.0)

    def statistic(weights: np.ndarray) -> np.ndarray:  # weights [..., E]: how often each event is drawn
        with np.errstate(invalid="ignore", divide="ignore"):
            return (weights @ sums[1]) / (weights @ counts[1]) - (weights @ sums[0]) / (weights @ counts[0])

    point = float(statistic(np.ones(len(ids))))
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=samples)
    low, high = np.nanpercentile(statistic(draws), [2.5, 97.5])
    return point, float(low), float(high)


def memory_gains(
    per_query: pd.DataFrame, models: Sequence[str], peers: Sequence[str], clear_of: Sequence[int] = CLEAR_OF
) -> pd.DataFrame:
    """`memory_gain` of every model against every peer, for rank-1 and AP, with a same-pass crop within each G."""
    rows = []
    for gap in clear_of:
        near = (per_query["nearest_same_pass"] <= gap).to_numpy()
        for model in models:
            for peer in peers:
                row = {
                    "model": model,
                    "peer": peer,
                    "same_pass_within": gap,
                    "queries": int(near.sum()),
                    "events": int(per_query["event"][near].nunique()),
                }
                for metric, label in (("rank1", "rank1"), ("ap", "mAP")):
                    scores = (per_query[f"{model} {metric}"], per_query[f"{peer} {metric}"])
                    point, low, high = memory_gain(*scores, near, per_query["event"].to_numpy())
                    row.update({f"{label}_gain": point, f"{label}_low": low, f"{label}_high": high})
                rows.append(row)
    return pd.DataFrame(rows)


def run(
    checkpoints: Sequence[str | Path] = (DEFAULT_CHECKPOINT,),
    peers: Sequence[str] = DEFAULT_PEERS,
    device: str | None = None,
    out: str | Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(summary, per-query, gains) over pets09_occ; with `out`, the summary is written there as CSV, the others
    beside it (`<stem>_per_query.csv`, `<stem>_gains.csv`)."""
    split = load_split("pets09_occ", default_root("pets09_occ"))
    proximity = query_proximity(split)
    scores: dict[str, pd.DataFrame] = {}
    for folder in checkpoints:
        scores[f"DPM++ {Path(folder).name}"] = checkpoint_per_query(folder, split, device)
    trained = list(scores)
    for name in peers:
        scores[name] = peer_per_query(name, split)
    summary = summarise(proximity, scores)
    per_query = proximity.copy()
    for model, frame in scores.items():
        per_query[f"{model} rank1"], per_query[f"{model} ap"] = frame["rank1"].to_numpy(), frame["ap"].to_numpy()
    gains = memory_gains(per_query, trained, list(peers))
    if out is not None:
        out = Path(out)
        write_text(out, summary.to_csv(index=False))
        write_text(out.with_name(f"{out.stem}_per_query.csv"), per_query.to_csv(index=False))
        write_text(out.with_name(f"{out.stem}_gains.csv"), gains.to_csv(index=False))
    return summary, per_query, gains


def format_table(summary: pd.DataFrame, proximity: pd.DataFrame | None = None) -> str:
    """Markdown: a row per non-empty subset, rank-1 / mAP (%) of each model in columns; with `proximity`, a line
    on the distances."""
    models = list(dict.fromkeys(summary["model"]))
    subsets_in_order = list(dict.fromkeys(summary["subset"]))
    header = "| subset | queries | events | " + " | ".join(f"{m} R1 / mAP" for m in models) + " |"
    lines = [header, "|" + " --- |" * (3 + len(models))]
    for subset in subsets_in_order:
        rows = summary[summary["subset"] == subset].set_index("model")
        first = rows.iloc[0]
        if first["queries"] == 0:
            continue
        cells = [
            "-"
            if math.isnan(rows.loc[m, "rank1"])
            else f"{100 * rows.loc[m, 'rank1']:.1f} / {100 * rows.loc[m, 'mAP']:.1f}"
            for m in models
        ]
        lines.append(f"| {subset} | {int(first['queries'])} | {int(first['events'])} | " + " | ".join(cells) + " |")
    if proximity is not None and len(proximity):
        same = proximity["nearest_same_occluder"]
        lines.append("")
        lines.append(
            f"nearest training crop of the query's own track: median {proximity['nearest_train'].median():.0f} "
            f"frames (min {proximity['nearest_train'].min():.0f}, max {proximity['nearest_train'].max():.0f}); "
            f"hidden by the same kind of occluder for {int(same.sum())} of {len(proximity)} queries, "
            f"{int((same & (proximity['nearest_train'] <= BIN_EDGES[0])).sum())} of them within {BIN_EDGES[0]} "
            "frames"
        )
    return "\n".join(lines)


def format_gains(gains: pd.DataFrame) -> str:
    """Markdown: each trained model's gain over each peer on near-duplicate queries, relative to the rest."""
    lines = [
        "(model - peer) on queries with a same-pass training crop within G frames, minus (model - peer) on the "
        "others; points, 95 % intervals resampling occlusion events",
        "",
        "| model | peer | G | queries | events | rank-1 | mAP |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in gains.itertuples():
        rank1 = f"{100 * row.rank1_gain:+.1f} [{100 * row.rank1_low:+.1f}, {100 * row.rank1_high:+.1f}]"
        mean_ap = f"{100 * row.mAP_gain:+.1f} [{100 * row.mAP_low:+.1f}, {100 * row.mAP_high:+.1f}]"
        cells = [row.model, row.peer, row.same_pass_within, row.queries, row.events, rank1, mean_ap]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)
