"""Occlusion-sensitivity maps drawn over the query: one panel per model, one shared colour scale."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

METRICS = {  # metric -> (title, colour scale, reversed: True where low is bad)
    "AP": ("AP of the true match", "RdYlGn", False),
    "rank": ("rank of the first true match (log scale)", "RdYlGn_r", True),
    "score": ("best true-match similarity", "RdYlGn", False),
}


def _values(smap, metric: str) -> np.ndarray:
    if metric == "AP":
        return smap.ap
    if metric == "rank":  # log10: rank 1 against 9 matters as much as 10 against 90
        return np.log10(np.where(smap.rank > 0, smap.rank, np.nan).astype(float))
    return smap.score


def sensitivity_figure(image: np.ndarray, maps: list, metric: str = "AP", opacity: float = 0.55) -> go.Figure:
    """`image` [H, W, 3] uint8 (the query as given) with each map's `metric` at every occluder position, in one
    panel per map (one model each), side by side, with one colour bar. Cells are the grid's positions."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}; got {metric!r}")
    title, scale, _ = METRICS[metric]
    height, width = image.shape[:2]
    values = [_values(m, metric) for m in maps]
    finite = np.concatenate([v[np.isfinite(v)] for v in values] + [np.array([0.0])])
    low, high = (0.0, 1.0) if metric == "AP" else (float(finite.min()), float(max(finite.max(), finite.min() + 1e-6)))
    colorbar = {"title": {"text": title, "side": "right"}, "len": 0.9}
    if metric == "rank":
        low, high = 0.0, max(high, 1.0)
        ticks = np.arange(0, int(np.ceil(high)) + 1)
        colorbar.update(tickvals=ticks.tolist(), ticktext=[str(10**t) for t in ticks])
    titles = [f"{m.model or 'model'}<br>clean: rank {m.clean['rank']}, AP {m.clean['ap']:.2f}" for m in maps]
    figure = make_subplots(rows=1, cols=len(maps), subplot_titles=titles, horizontal_spacing=0.08)
    for column, (smap, value) in enumerate(zip(maps, values), start=1):
        figure.add_trace(go.Image(z=image, hoverinfo="skip"), row=1, col=column)
        text = [
            [
                f"x {x:.2f}, y {y:.2f}<br>rank {r}<br>AP {a:.3f}<br>score {s:.3f}<br>covers {c:.0%}"
                for x, r, a, s, c in zip(smap.xs, rr, ar, sr, cr)
            ]
            for y, rr, ar, sr, cr in zip(smap.ys, smap.rank, smap.ap, smap.score, smap.covered)
        ]
        figure.add_trace(
            go.Heatmap(
                z=value,
                x=smap.xs * width,
                y=smap.ys * height,
                zmin=low,
                zmax=high,
                colorscale=scale,
                opacity=opacity,
                showscale=column == len(maps),
                colorbar=colorbar,
                text=text,
                hovertemplate="%{text}<extra></extra>",
            ),
            row=1,
            col=column,
        )
        figure.update_xaxes(range=[0, width], showticklabels=False, row=1, col=column)
        figure.update_yaxes(
            range=[height, 0], showticklabels=False, scaleanchor=f"x{column if column > 1 else ''}", row=1, col=column
        )
    first = maps[0]
    figure.update_layout(
        height=520,
        margin={"l": 10, "r": 10, "t": 70, "b": 40},
        annotations=list(figure.layout.annotations)
        + [
            {
                "text": f"{first.occluder}, {first.scale:.0%} of the height, centred at each cell; "
                f"{len(first.ys)}×{len(first.xs)} positions",
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": -0.06,
            }
        ],
    )
    return figure
