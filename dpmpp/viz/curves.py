"""Plotly curves: CMC, metrics by occlusion bin, and training losses."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go


def cmc_figure(curves: dict[str, list[float]], max_rank: int = 20) -> go.Figure:
    figure = go.Figure()
    for label, cmc in curves.items():
        ranks = list(range(1, min(max_rank, len(cmc)) + 1))
        figure.add_scatter(x=ranks, y=[100 * v for v in cmc[: len(ranks)]], mode="lines+markers", name=label)
    figure.update_layout(
        height=300,
        margin={"l": 40, "r": 10, "t": 30, "b": 40},
        xaxis_title="rank",
        yaxis_title="matching rate (%)",
        yaxis_range=[0, 100],
    )
    return figure


def occlusion_bins_figure(table: pd.DataFrame) -> go.Figure:
    """Rank-1 and mAP per occluded-fraction bin, mask on and off."""
    figure = go.Figure()
    for matching, rows in table.groupby("matching", sort=False):
        labels = [f"{b} (n={n})" for b, n in zip(rows["bin"], rows["queries"])]
        for metric in ("rank-1", "mAP"):
            figure.add_bar(x=labels, y=100 * rows[metric], name=f"{metric}, {matching}")
    figure.update_layout(
        barmode="group",
        height=300,
        margin={"l": 40, "r": 10, "t": 30, "b": 40},
        xaxis_title="occluded fraction of the query",
        yaxis_title="%",
    )
    return figure


def loss_figure(history: list[dict]) -> go.Figure:
    """history: rows with 'step', 'stage', loss names and optional 'accuracy'."""
    figure = go.Figure()
    if history:
        frame = pd.DataFrame(history)
        for column in [c for c in frame.columns if c not in ("step", "stage", "epoch", "accuracy")]:
            figure.add_scatter(x=frame["step"], y=frame[column], mode="lines", name=column)
        if "accuracy" in frame and frame["accuracy"].notna().any():
            figure.add_scatter(x=frame["step"], y=frame["accuracy"], mode="lines", name="accuracy", yaxis="y2")
    figure.update_layout(
        height=300,
        margin={"l": 40, "r": 40, "t": 30, "b": 40},
        xaxis_title="step",
        yaxis_title="loss",
        yaxis2={"overlaying": "y", "side": "right", "range": [0, 1], "title": "accuracy"},
    )
    return figure
