"""Zero-shot table: the HSV floor and every pretrained peer, trained on nothing here, on every bundled benchmark.

Datasets: pets09_occ and pets09_holistic (one fixed split each), cuhk01 and cuhk01_occ (test protocol) and
cuhk01_val / cuhk01_occ_val (validation protocol), each CUHK01 one over the first N random splits. Every image of
a benchmark folder is embedded once per model; each split is then evaluated by indexing the features, with cosine
similarity on unit features and the metrics of `dpmpp.eval.metrics` (through `evaluate_similarity`, as `eval`).

Output: a tidy CSV, one row per model × dataset × split (`split` is "-" for the PETS09 benchmarks), metrics in
points (rank-1, mAP, mINP), and `embed_seconds`: the wall time to embed every image the evaluated datasets use in
that benchmark folder once (the same for every row of a folder and model). Beside it, `<stem>_per_query/` holds one
folder per dataset and split with one CSV per model of per-query results (query index, file, identity, rank of the
first true match, AP, rank-1, top match's identity, occluder fields), in the format `dpmpp.bench.events` reads.
They are written for PETS09 and for CUHK01 split 0, the split a trained row is evaluated on by default; the models
are deterministic, so their rows carry seed 0 and pair with a trained row's seed 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dpmpp.atomic import write_text
from dpmpp.bench.events import per_query_frame
from dpmpp.data.datasets import load_split
from dpmpp.data.datasets.cuhk01 import NUM_SPLITS
from dpmpp.data.images import load_image
from dpmpp.data.records import Split
from dpmpp.eval.baselines import hsv_stripe_features
from dpmpp.eval.extract import evaluate_similarity, top_match_pids
from dpmpp.model.peers import PEERS, load_peer, peer_names
from dpmpp.paths import default_root

logger = logging.getLogger(__name__)

HSV = "hsv"
DATASETS = ("pets09_occ", "pets09_holistic", "cuhk01", "cuhk01_occ", "cuhk01_val", "cuhk01_occ_val")
SPLIT_DATASETS = frozenset(name for name in DATASETS if name.startswith("cuhk01"))  # those with random splits
FIXED = "-"  # the split of a benchmark with one fixed split
PER_QUERY_SPLITS = (0,)
PER_QUERY_SEED = 0
COLUMNS = ["model", "dataset", "split", "rank1", "mAP", "mINP", "num_query", "num_gallery", "embed_seconds"]
HSV_CHUNK = 512  # images decoded at once for the HSV floor


def model_names() -> list[str]:
    """The HSV floor, then every registered peer."""
    return [HSV, *peer_names()]


def model_title(name: str) -> str:
    return "HSV stripes (no learning)" if name == HSV else PEERS[name].title


def embedder(name: str, threads: int | None = None) -> Callable[[list[str]], np.ndarray]:
    """Image paths -> unit features [N, D] for model `name` (see `model_names()`)."""
    if name == HSV:

        def hsv(paths: list[str]) -> np.ndarray:
            chunks = [paths[start : start + HSV_CHUNK] for start in range(0, len(paths), HSV_CHUNK)]
            return np.concatenate([hsv_stripe_features([load_image(p) for p in chunk]) for chunk in chunks])

        return hsv
    return load_peer(name, threads=threads).embed


def load_splits(datasets: Sequence[str], splits: int) -> dict[str, dict[int | str, Split]]:
    """dataset -> split -> Split, from the bundled folders: the first `splits` random splits where there are any."""
    out = {}
    for dataset in datasets:
        root = default_root(dataset)
        if dataset in SPLIT_DATASETS:
            out[dataset] = {k: load_split(dataset, root, split=k) for k in range(splits)}
        else:
            out[dataset] = {FIXED: load_split(dataset, root)}
    return out


def image_pools(splits_by_dataset: dict[str, dict[int | str, Split]]) -> dict[Path, list[str]]:
    """Benchmark folder -> every query and gallery image the datasets in it use, each once, in first-seen order."""
    pools: dict[Path, dict[str, None]] = {}
    for dataset, splits in splits_by_dataset.items():
        pool = pools.setdefault(default_root(dataset), {})
        for split in splits.values():
            pool.update(dict.fromkeys(r.path for r in (*split.query, *split.gallery)))
    return {root: list(paths) for root, paths in pools.items()}


def per_query_folder(dataset: str, split: int | str) -> str:
    return dataset if split == FIXED else f"{dataset}_split{split}"


def _per_query(model: str, dataset: str, split_id: int | str, split: Split, sim: np.ndarray, metrics) -> pd.DataFrame:
    frame = per_query_frame(split.query, metrics.ap, metrics.first_true_rank, top_match_pids(split, sim))
    frame.insert(0, "query", np.arange(len(split.query)))
    frame.insert(frame.columns.get_loc("ap"), "first_true_rank", metrics.first_true_rank)
    return frame.assign(method=model, seed=PER_QUERY_SEED, dataset=dataset, split=split_id)


def run(
    out: str | Path | None = None,
    splits: int = NUM_SPLITS,
    models: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    threads: int | None = None,
) -> list[dict]:
    """Evaluate `models` (default: all) on `datasets` (default: all six) over the first `splits` CUHK01 splits.

    Returns the rows; with `out`, writes them there as CSV and the per-query results to `<stem>_per_query/`,
    atomically. `threads` bounds the onnxruntime peers' threads.
    """
    models, datasets = list(models or model_names()), list(datasets or DATASETS)
    unknown = [m for m in models if m not in model_names()] + [d for d in datasets if d not in DATASETS]
    if unknown:
        raise ValueError(f"unknown models or datasets {unknown}; models: {model_names()}, datasets: {list(DATASETS)}")
    if splits < 1:
        raise ValueError(f"splits must be at least 1, got {splits}")
    per_query_dir = Path(out).parent / f"{Path(out).stem}_per_query" if out else None
    splits_by_dataset = load_splits(datasets, splits)
    pools = image_pools(splits_by_dataset)
    rows = []
    for model in models:
        embed = embedder(model, threads)
        features, seconds = {}, {}
        for root, paths in pools.items():
            started = time.perf_counter()
            feats = embed(paths)
            seconds[root] = time.perf_counter() - started
            features.update(zip(paths, feats))
            logger.info("%s: embedded %d images of %s in %.1f s", model, len(paths), root.name, seconds[root])
        for dataset, by_split in splits_by_dataset.items():
            for split_id, split in by_split.items():
                query = np.stack([features[r.path] for r in split.query])
                gallery = np.stack([features[r.path] for r in split.gallery])
                sim = query @ gallery.T
                metrics = evaluate_similarity(split, sim)
                rows.append(
                    {
                        "model": model,
                        "dataset": dataset,
                        "split": split_id,
                        **{key: round(100 * getattr(metrics, key), 2) for key in ("rank1", "mAP", "mINP")},
                        "num_query": metrics.num_query,
                        "num_gallery": metrics.num_gallery,
                        "embed_seconds": round(seconds[default_root(dataset)], 2),
                    }
                )
                if per_query_dir is not None and split_id in (FIXED, *PER_QUERY_SPLITS):
                    frame = _per_query(model, dataset, split_id, split, sim, metrics)
                    target = per_query_dir / per_query_folder(dataset, split_id) / f"{model}.csv"
                    write_text(target, frame.to_csv(index=False, float_format="%.6g"))
    if out is not None:
        write_text(out, pd.DataFrame(rows, columns=COLUMNS).to_csv(index=False))
    return rows


def _cell(values: pd.DataFrame, spread: bool) -> str:
    if values.empty:
        return "–"
    if not spread or len(values) < 2:
        return f"{values['rank1'].mean():.1f} / {values['mAP'].mean():.1f}"
    rank1, mAP = values["rank1"], values["mAP"]
    return f"{rank1.mean():.1f} ± {rank1.std(ddof=1):.1f} / {mAP.mean():.1f} ± {mAP.std(ddof=1):.1f}"


def format_table(rows: list[dict] | pd.DataFrame) -> str:
    """Markdown: models × datasets, cells "rank-1 / mAP"; CUHK01 cells the mean ± sample std over the splits, then
    a table of split 0 alone, and the seconds each model took to embed each benchmark folder."""
    frame = pd.DataFrame(rows)
    frame["split"] = frame["split"].astype(str)
    models = list(dict.fromkeys(frame["model"]))
    datasets = [d for d in DATASETS if d in set(frame["dataset"])]
    split_datasets = [d for d in datasets if d in SPLIT_DATASETS]
    num_splits = frame[frame["dataset"].isin(split_datasets)].groupby("dataset")["split"].nunique()
    roots = list(dict.fromkeys(default_root(d).name for d in datasets))
    header = [*datasets, *(f"embed s, {root}" for root in roots)]
    lines = [
        "Zero-shot rank-1 / mAP (%)"
        + (f"; CUHK01: mean ± std over {num_splits.max()} random splits" if split_datasets else ""),
        "",
        "| model | " + " | ".join(header) + " |",
        "|---|" + "---|" * len(header),
    ]
    for model in models:
        of_model = frame[frame["model"] == model]
        cells = [_cell(of_model[of_model["dataset"] == d], d in SPLIT_DATASETS) for d in datasets]
        for root in roots:
            in_root = of_model[[default_root(d).name == root for d in of_model["dataset"]]]
            cells.append(f"{in_root['embed_seconds'].iloc[0]:.1f}")
        lines.append(f"| {model_title(model)} | " + " | ".join(cells) + " |")
    if split_datasets:
        lines += ["", "Split 0 alone:", "", "| model | " + " | ".join(split_datasets) + " |"]
        lines.append("|---|" + "---|" * len(split_datasets))
        for model in models:
            of_model = frame[(frame["model"] == model) & (frame["split"] == "0")]
            cells = [_cell(of_model[of_model["dataset"] == d], False) for d in split_datasets]
            lines.append(f"| {model_title(model)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
