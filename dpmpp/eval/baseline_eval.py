"""Evaluate a no-learning baseline on a benchmark split."""

from __future__ import annotations

import numpy as np

from dpmpp.data.images import load_image
from dpmpp.data.records import ReIDRecord, Split
from dpmpp.eval.baselines import hsv_stripe_features
from dpmpp.eval.metrics import ReIDMetrics, evaluate

BASELINES = ("hsv",)


def _labels(records: list[ReIDRecord]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([r.pid for r in records]), np.array([r.camid for r in records])


def baseline_features(name: str, records: list[ReIDRecord]) -> np.ndarray:
    if name == "hsv":
        return hsv_stripe_features([load_image(r.path) for r in records])
    raise ValueError(f"unknown baseline {name!r}; available: {', '.join(BASELINES)}")


def evaluate_baseline(name: str, split: Split) -> ReIDMetrics:
    query, gallery = baseline_features(name, split.query), baseline_features(name, split.gallery)
    distmat = 1.0 - query @ gallery.T
    q_pids, q_camids = _labels(split.query)
    g_pids, g_camids = _labels(split.gallery)
    return evaluate(distmat, q_pids, g_pids, q_camids, g_camids)
