"""The prototype-space map as a Plotly figure, with a query's clean→occluded trail."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

SYMBOLS = {"prototype": "star", "gallery": "circle", "query": "triangle-up"}
SIZES = {"prototype": 16, "gallery": 6, "query": 8}


def umap_figure(points, colour_by: str = "identity", trail: np.ndarray | None = None) -> go.Figure:
    """`points`: a PrototypeMap. colour_by: identity, correctness or occlusion. trail: [2, 2] clean, occluded."""
    figure = go.Figure()
    kinds = np.array(points.kind)
    for kind in ("gallery", "query", "prototype"):
        rows = np.flatnonzero(kinds == kind)
        if not len(rows):
            continue
        if colour_by == "identity":
            colour, scale, bar = points.pid[rows], "Turbo", None
        elif colour_by == "correctness":
            colour = np.where(np.isnan(points.correct[rows]), 0.5, points.correct[rows])
            scale, bar = [[0, "#d13b3b"], [0.5, "#cccccc"], [1, "#1e9e48"]], None
        else:
            colour = np.nan_to_num(points.occluded_fraction[rows], nan=0.0)
            scale, bar = "Viridis", {"title": "occluded"}
        hover = [
            f"{kind} {points.index[r]}<br>person {points.pid[r]}"
            + (f"<br>occluded {points.occluded_fraction[r]:.0%}" if not np.isnan(points.occluded_fraction[r]) else "")
            for r in rows
        ]
        figure.add_scatter(
            x=points.coords[rows, 0],
            y=points.coords[rows, 1],
            mode="markers+text" if kind == "prototype" else "markers",
            texttemplate=[f"P{points.pid[r]:02d}" for r in rows] if kind == "prototype" else None,
            textposition="top center",
            name=kind,
            marker={
                "symbol": SYMBOLS[kind],
                "size": SIZES[kind],
                "color": colour,
                "colorscale": scale,
                "line": {"width": 1, "color": "black"} if kind == "prototype" else {"width": 0},
                "showscale": bar is not None and kind == "gallery",
                "colorbar": bar,
            },
            text=hover,
            hovertemplate="%{text}<extra></extra>",
            customdata=np.stack([rows], axis=1),
        )
    if trail is not None:
        figure.add_scatter(
            x=trail[:, 0],
            y=trail[:, 1],
            mode="lines+markers+text",
            name="query: clean → occluded",
            text=["clean", "occluded"],
            textposition="top center",
            line={"color": "black", "width": 2, "dash": "dot"},
            marker={"size": 14, "symbol": ["circle-open", "x"], "color": "black"},
        )
    figure.update_layout(
        height=520,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        dragmode="lasso",
        title=points.note,
        legend={"orientation": "h", "y": -0.05},
        xaxis={"showticklabels": False},
        yaxis={"showticklabels": False},
    )
    return figure
