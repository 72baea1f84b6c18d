"""An experiment grid as data: `python -m dpmpp bench grid --grid bench/grids/<name>.json --seeds 0 1 2`.

A grid file names a preset, the training set, the benchmarks every row is evaluated on, zero-shot peers, and
the trained rows (config overrides on the preset). Every (row, seed) is trained with the same budget, evaluated on
every benchmark with the mask on and off, and its per-query results are kept, so that the summary pairs rows on
the seeds they share and draws intervals over seeds and occlusion events together (`events.hierarchical_bootstrap`).
Events: a pass behind an occluder on video benchmarks, an identity on still-image ones (its queries share a
person). Finished runs are skipped on a rerun, so an interrupted grid resumes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dpmpp.atomic import write_text
from dpmpp.bench.events import checkpoint_per_query, hierarchical_bootstrap, paired_bootstrap, per_query_frame
from dpmpp.config import apply_overrides, load_preset
from dpmpp.data.datasets import load_split
from dpmpp.paths import default_root

logger = logging.getLogger(__name__)
MASK_OFF = ", test-time mask off"


@dataclass
class Grid:
    name: str
    preset: str
    train_data: str  # registered dataset the rows train on
    evaluate: list[str]  # bundled benchmarks every row is scored on (test protocols)
    reference: str  # the row the others are compared with
    rows: dict[str, list[str]]  # row name -> config overrides on the preset
    peers: list[str] = field(default_factory=list)  # zero-shot peers (dpmpp.model.peers) scored on the same splits
    epochs: int | None = None  # stage-2 epochs of every row (None: the preset's)
    roots: dict[str, str] = field(default_factory=dict)  # dataset -> folder, where not the bundled one

    def root(self, dataset: str) -> Path:
        root = self.roots.get(dataset) or default_root(dataset)
        if root is None:
            raise ValueError(f"grid {self.name}: no folder for {dataset!r}; give it in the grid's roots")
        return Path(root)

    @classmethod
    def load(cls, path: str | Path) -> "Grid":
        data = json.loads(Path(path).read_text())
        unknown = set(data) - {f for f in cls.__dataclass_fields__ if f != "name"}
        if unknown:
            raise ValueError(f"{path}: unknown grid fields {sorted(unknown)}")
        grid = cls(name=Path(path).stem, **data)
        if grid.reference not in grid.rows:
            raise ValueError(f"{path}: reference {grid.reference!r} is not one of the rows {list(grid.rows)}")
        return grid

    def folders(self, out: Path) -> tuple[Path, Path]:
        """Checkpoints (not committed) and per-query results."""
        return out / f"{self.name}_runs", out / f"{self.name}_per_query"


def run_name(row: str, seed) -> str:
    return "".join(c if c.isalnum() else "_" for c in row).strip("_") + f"_seed{seed}"


def _events(frame: pd.DataFrame, records) -> np.ndarray:
    """Occlusion passes where records carry frames; otherwise each identity is one event."""
    if any("frame" in r.meta for r in records):
        return frame["event"].to_numpy()
    return pd.factorize(frame["pid"])[0]


def train_and_score(grid: Grid, row: str, seed: int, out: Path, threads: int | None = None) -> list[Path]:
    """Train one (row, seed) and write its per-query results on every benchmark; returns the files written."""
    from dpmpp.engine.train import train

    if threads:
        torch.set_num_threads(threads)
    runs, per_query = grid.folders(out)
    config = apply_overrides(load_preset(grid.preset), list(grid.rows[row]))
    config.data.name, config.train.seed, config.train.eval_every = grid.train_data, seed, 0
    config.data.root = grid.roots.get(grid.train_data)
    if grid.epochs is not None:
        config.train.epochs = grid.epochs
    folder = runs / run_name(row, seed)
    started = time.perf_counter()
    train(config, folder)
    seconds = time.perf_counter() - started
    written = []
    for dataset in grid.evaluate:
        split = load_split(dataset, grid.root(dataset))
        frame = checkpoint_per_query(folder, split).assign(row=row, seed=seed, dataset=dataset, train_s=seconds)
        frame["event"] = _events(frame, split.query)
        path = per_query / dataset / f"{run_name(row, seed)}.csv"
        write_text(path, frame.to_csv(index=False, float_format="%.6g"))
        written.append(path)
    return written


def score_peer(grid: Grid, name: str, out: Path) -> None:
    from dpmpp.eval.extract import evaluate_similarity, top_match_pids
    from dpmpp.model.peers import load_peer

    peer = load_peer(name)
    for dataset in grid.evaluate:
        path = grid.folders(out)[1] / dataset / f"{run_name(name, '-')}.csv"
        if path.exists():
            continue
        split = load_split(dataset, grid.root(dataset))
        sim = peer.embed([r.path for r in split.query]) @ peer.embed([r.path for r in split.gallery]).T
        metrics = evaluate_similarity(split, sim)
        frame = per_query_frame(split.query, metrics.ap, metrics.first_true_rank, top_match_pids(split, sim))
        frame = frame.assign(row=peer.name, seed="-", dataset=dataset, train_s=0.0)
        frame["event"] = _events(frame, split.query)
        write_text(path, frame.to_csv(index=False, float_format="%.6g"))


def run(grid: Grid, seeds: list[int], out: Path, jobs: int = 1, rows: list[str] | None = None) -> None:
    """Score the peers, then train every missing (row, seed), `jobs` at a time (one process each), seed by seed:
    an interrupted grid leaves whole seeds, which pair."""
    for name in grid.peers:
        score_peer(grid, name, out)
    per_query = grid.folders(out)[1]

    def finished(row: str, seed: int) -> bool:  # scored on every benchmark of the grid
        return all((per_query / dataset / f"{run_name(row, seed)}.csv").exists() for dataset in grid.evaluate)

    todo = [(r, s) for s in seeds for r in rows or grid.rows if not finished(r, s)]
    if jobs <= 1:
        for row, seed in todo:
            train_and_score(grid, row, seed, out)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(train_and_score, grid, r, s, out, threads): (r, s) for r, s in todo}
        for future in as_completed(futures):
            try:
                future.result()
            except Exception:  # one failed run must not lose the others
                logger.exception("run %s failed", futures[future])


def load_results(grid: Grid, out: Path) -> pd.DataFrame:
    """Every per-query file of the grid, with the mask-off scores of masked rows as rows of their own."""
    frames = [pd.read_csv(p, dtype={"seed": str}) for p in sorted(grid.folders(out)[1].glob("*/*.csv"))]
    if not frames:
        raise FileNotFoundError(f"no per-query results under {grid.folders(out)[1]}; run the grid first")
    data = pd.concat(frames, ignore_index=True)
    if "ap_no_mask" in data:
        masked = data.groupby(["row", "seed", "dataset"])["ap_no_mask"].transform(lambda scores: scores.notna().any())
        off = data[masked].copy()  # whole runs (a query without a true match has no score either way)
        off["row"] = off["row"] + MASK_OFF
        off["ap"], off["rank1"] = off["ap_no_mask"], off["rank1_no_mask"]
        data = pd.concat([data, off], ignore_index=True)
    return data


def summary_table(data: pd.DataFrame, datasets: list[str]) -> str:
    """Markdown: rank-1 / mAP, mean ± std over seeds, per row and benchmark."""
    lines = ["| row | seeds | " + " | ".join(f"{d} rank-1 / mAP" for d in datasets) + " |"]
    lines.append("|---|---|" + "---|" * len(datasets))
    for row in dict.fromkeys(data["row"]):
        cells, seeds = [], 0
        for dataset in datasets:
            scores = data[(data["row"] == row) & (data["dataset"] == dataset)].groupby("seed")[["rank1", "ap"]].mean()
            seeds = max(seeds, len(scores))
            cells.append(" / ".join(_mean_std(100 * scores[key].to_numpy()) for key in ("rank1", "ap")))
        lines.append(
            f"| {row} | {seeds if data[data['row'] == row]['seed'].iloc[0] != '-' else '–'} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def paired_table(data: pd.DataFrame, reference: str, dataset: str, samples: int = 2000) -> str:
    """Markdown: each row minus `reference` on `dataset`, on their shared seeds (a zero-shot peer's one score
    stands for every seed), with 95 % intervals over seeds and events together."""
    subset = data[data["dataset"] == dataset]
    ref = _by_seed(subset, reference)
    if not ref:  # a grid still running: the reference has no result here yet
        return f"{dataset}: no result of {reference} yet"
    lines = [
        f"{dataset}: row − {reference}, 95 % intervals resampling seeds and events (two-level bootstrap); "
        "† one shared seed: events only, seed variation not included",
        "",
        "| row | seeds | Δ rank-1 | Δ mAP |",
        "|---|---|---|---|",
    ]
    events = next(iter(ref.values()))["event"]
    for row in dict.fromkeys(subset["row"]):
        if row == reference:
            continue
        scores = _by_seed(subset, row)
        if list(scores) == ["-"]:  # deterministic: the same scores under every seed
            scores = {seed: scores["-"] for seed in ref}
        shared = sorted(set(scores) & set(ref))
        if not shared:
            continue
        # one shared seed: events only (marked †), as a seed level cannot be resampled from one seed
        bootstrap = hierarchical_bootstrap if len(shared) > 1 else paired_bootstrap
        cells = []
        for key in ("rank1", "ap"):
            mine = np.stack([scores[s][key] for s in shared])
            theirs = np.stack([ref[s][key] for s in shared])
            point, low, high = bootstrap(100 * mine, 100 * theirs, events, samples=samples)
            cells.append(f"{point:+.1f} [{low:+.1f}, {high:+.1f}]")
        mark = "" if len(shared) > 1 else " †"
        lines.append(f"| {row} | {len(shared)}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headroom_table(data: pd.DataFrame, reference: str, datasets: list[str]) -> str:
    """Markdown: where rank-1 can still move against each zero-shot peer. Per benchmark, counted in queries that
    have a true match: the peer's rank-1 misses, how many of them every seed of `reference` misses too, and per seed
    (mean) the queries the reference fixes (the peer misses them, it does not) and breaks (the other way round).
    The paired rank-1 gain is (fixed - broken) / queries, so the peer's misses bound it: on a benchmark near its
    ceiling, a real gain is a handful of queries."""
    lines = [
        f"Rank-1 headroom: {reference} against each zero-shot peer, counted in queries",
        "",
        "| benchmark | peer | queries | peer misses | missed by every seed too | fixed per seed | broken per seed |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for dataset in datasets:
        subset = data[data["dataset"] == dataset]
        ref = _by_seed(subset, reference)
        if not ref:
            continue
        rank1 = np.stack([scores["rank1"] for scores in ref.values()])  # [seeds, Q]; NaN: no true match to find
        for peer in dict.fromkeys(subset.loc[subset["seed"] == "-", "row"]):
            peer_rank1 = _by_seed(subset, peer)["-"]["rank1"]
            if len(peer_rank1) != rank1.shape[1]:
                continue  # not the same queries
            scored = ~np.isnan(peer_rank1)
            hits, peer_hit = rank1[:, scored] > 0, peer_rank1[scored] > 0
            missed = ~peer_hit
            fixed = (hits & missed).sum(1).mean()
            broken = (~hits & peer_hit).sum(1).mean()
            lines.append(
                f"| {dataset} | {peer} | {scored.sum()} | {missed.sum()} | {(missed & ~hits.any(0)).sum()} | "
                f"{fixed:.1f} | {broken:.1f} |"
            )
    return "\n".join(lines)


def _by_seed(subset: pd.DataFrame, row: str) -> dict[str, dict[str, np.ndarray]]:
    """seed -> {"rank1": [Q], "ap": [Q], "event": [Q]} in query order (files sorted, so every row lines up)."""
    out = {}
    for seed, group in subset[subset["row"] == row].groupby("seed"):
        group = group.sort_values("file")
        out[str(seed)] = {key: group[key].to_numpy(float) for key in ("rank1", "ap")} | {
            "event": group["event"].to_numpy()
        }
    return out


def _mean_std(values: np.ndarray) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"
