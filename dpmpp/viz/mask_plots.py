"""Plotly figures of the identity-subspace mask: sorted bars, clean vs occluded, per-dimension contributions.

Each figure is built from one specification (`go.Figure(data=..., layout=...)`): the same figure as a chain of
`add_bar`/`update_layout` calls, about three times cheaper, which matters when a class asks for masks at once."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

LEGEND = {"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"}
MARGIN = {"l": 40, "r": 10, "t": 50, "b": 40}


def _axes(x_title: str, y_title: str) -> dict:
    return {"xaxis": {"title": {"text": x_title}}, "yaxis": {"title": {"text": y_title}}}


def mask_bars(clean: np.ndarray, occluded: np.ndarray | None, threshold: float) -> go.Figure:
    """The mask over prototype dimensions, sorted by the clean mask; the occluded one and the difference beside it."""
    order = np.argsort(-clean, kind="stable")
    dims = np.arange(len(clean))
    data = [
        {
            "type": "bar",
            "x": dims,
            "y": clean[order],
            "name": "clean",
            "marker": {"color": "#2c6fbb"},
            "customdata": order,
            "hovertemplate": "dimension %{customdata}<br>clean %{y:.3f}<extra></extra>",
        }
    ]
    if occluded is not None:
        data.append(
            {
                "type": "bar",
                "x": dims,
                "y": occluded[order],
                "name": "occluded",
                "marker": {"color": "#e07b20"},
                "opacity": 0.75,
                "customdata": order,
                "hovertemplate": "dimension %{customdata}<br>occluded %{y:.3f}<extra></extra>",
            }
        )
        data.append(
            {
                "type": "scatter",
                "x": dims,
                "y": (occluded - clean)[order],
                "name": "occluded − clean",
                "mode": "lines",
                "line": {"color": "#333", "width": 1},
            }
        )
    layout = {
        "shapes": [  # the threshold line, as add_hline draws it, without its per-call layout walk
            {
                "type": "line",
                "xref": "x domain",
                "x0": 0,
                "x1": 1,
                "yref": "y",
                "y0": threshold,
                "y1": threshold,
                "line": {"dash": "dot"},
            }
        ],
        "annotations": [
            {
                "text": f"threshold {threshold:.2f}",
                "xref": "x domain",
                "x": 1,
                "xanchor": "right",
                "yref": "y",
                "y": threshold,
                "yanchor": "bottom",
                "showarrow": False,
            }
        ],
        "barmode": "overlay",
        "height": 320,
        "margin": MARGIN,
        **_axes("prototype dimensions, sorted by the clean mask", "mask value"),
        "legend": LEGEND,
    }
    return go.Figure(data=data, layout=layout)


def contributions(
    query: np.ndarray, mask: np.ndarray, true_match: np.ndarray | None, wrong_match: np.ndarray | None, top: int = 24
) -> go.Figure:
    """Per-dimension terms of the masked score s = Σ_d q̂_d m_d ĝ_d / ‖m ⊙ ĝ‖ for the true and the top wrong match."""
    terms = {}
    for label, gallery in (("first true match", true_match), ("top wrong match", wrong_match)):
        if gallery is not None:
            terms[label] = query * mask * gallery / max(float(np.linalg.norm(mask * gallery)), 1e-12)
    if not terms:
        return go.Figure()
    spread = np.abs(np.subtract(*terms.values())) if len(terms) == 2 else np.abs(next(iter(terms.values())))
    dims = np.argsort(-spread, kind="stable")[:top]
    colours = {"first true match": "#1e9e48", "top wrong match": "#d13b3b"}
    data = [
        {
            "type": "bar",
            "x": [str(d) for d in dims],
            "y": values[dims],
            "name": f"{label} (s = {values.sum():.3f})",
            "marker": {"color": colours[label]},
        }
        for label, values in terms.items()
    ]
    layout = {
        "barmode": "group",
        "height": 300,
        "margin": MARGIN,
        **_axes(f"the {len(dims)} dimensions where the two differ most", "contribution to the score"),
        "legend": LEGEND,
    }
    return go.Figure(data=data, layout=layout)
