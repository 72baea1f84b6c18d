"""The prototype-space map as a Plotly figure, with a query's clean→occluded trail.

Every colouring uses one scale across gallery, query and prototype points: a person has the same colour in every
trace (a fixed qualitative palette, with a legend), and the occluded fraction runs 0–1 on every trace.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

SYMBOLS = {"prototype": "star", "gallery": "circle", "query": "triangle-up"}
SIZES = {"prototype": 16, "gallery": 6, "query": 8}
PALETTE = qualitative.D3 + qualitative.Dark24  # person colours, in order of person id
CORRECT, WRONG, NEUTRAL = "#1e9e48", "#d13b3b", "#c8c8c8"
OCCLUSION_SCALE = "Viridis"
OCCLUSION_RANGE = (0.0, 1.0)  # the occluded fraction's colour range, shared by every trace
NOTES = {
    "identity": "colour: person (same colour for the gallery, queries and the prototype of one person)",
    "correctness": "colour: green, query matched at rank 1; red, missed; grey, gallery and prototypes",
    "occlusion": "colour: occluded fraction, 0–1 on one scale for every point (prototypes white)",
}


def person_colours(pids) -> dict[int, str]:
    """One fixed colour per person id, in order of id."""
    return {int(pid): PALETTE[i % len(PALETTE)] for i, pid in enumerate(sorted({int(p) for p in pids}))}


def _hover(points, kind: str, row: int) -> str:
    text = f"{kind} {points.index[row]}<br>person {points.pid[row]}"
    if kind == "prototype":
        return text + "<br>drawn at the mean map position<br>of its 10 nearest image features"
    fraction = points.occluded_fraction[row]
    return text + ("" if np.isnan(fraction) else f"<br>occluded {fraction:.0%}")


def _marker(points, kind: str, rows: np.ndarray, colour_by: str, colours: dict[int, str]) -> dict:
    marker = {
        "symbol": SYMBOLS[kind],
        "size": SIZES[kind],
        "line": {"width": 1, "color": "black"} if kind == "prototype" else {"width": 0},
    }
    if colour_by == "identity":
        return {**marker, "color": [colours[int(points.pid[r])] for r in rows]}
    if colour_by == "correctness":
        correct = points.correct[rows]
        return {**marker, "color": np.where(np.isnan(correct), NEUTRAL, np.where(correct > 0.5, CORRECT, WRONG))}
    fraction = points.occluded_fraction[rows]
    scale = {"colorscale": OCCLUSION_SCALE, "cmin": OCCLUSION_RANGE[0], "cmax": OCCLUSION_RANGE[1]}
    if kind == "prototype":
        return {**marker, **scale, "color": "white"}
    bar = {"title": {"text": "occluded<br>fraction"}, "len": 0.8}
    return {**marker, **scale, "color": np.nan_to_num(fraction, nan=0.0), "showscale": kind == "query", "colorbar": bar}


def umap_figure(
    points, colour_by: str = "identity", trail: np.ndarray | None = None, highlight: int | None = None
) -> go.Figure:
    """`points`: a PrototypeMap. colour_by: identity, correctness or occlusion. trail: [2, 2] clean, occluded.
    `highlight`: a person whose points are drawn on top, large and outlined, with every other point faded.

    Prototypes of identities outside the benchmark (training identities) are not drawn. With more persons than
    the palette has colours (CUHK01's 486), colours repeat and the legend lists point types only: hover names a
    point's person, and `highlight` finds one."""
    figure = go.Figure()
    kinds, foreign = np.array(points.kind), np.asarray(points.foreign, bool)
    shown = points.shown
    colours = person_colours(points.pid[~foreign])
    marked = (points.pid == highlight) & ~foreign if highlight is not None else np.zeros(len(kinds), bool)
    for kind in ("gallery", "query", "prototype"):
        rows = np.flatnonzero((kinds == kind) & ~foreign)
        if not len(rows):
            continue
        figure.add_scatter(
            opacity=0.3 if marked.any() else 1.0,
            x=shown[rows, 0],
            y=shown[rows, 1],
            mode="markers+text" if kind == "prototype" else "markers",
            texttemplate=[f"P{points.pid[r]:02d}" for r in rows] if kind == "prototype" else None,
            textposition="top center",
            name=kind,
            legendgroup="kinds",
            marker=_marker(points, kind, rows, colour_by, colours),
            text=[_hover(points, kind, r) for r in rows],
            hovertemplate="%{text}<extra></extra>",
            customdata=np.stack([rows], axis=1),
        )
    for kind in ("gallery", "query", "prototype"):  # the highlighted person, on top of everything else
        rows = np.flatnonzero((kinds == kind) & marked)
        if not len(rows):
            continue
        marker = _marker(points, kind, rows, colour_by, colours)
        marker.update(size=SIZES[kind] * 2, line={"width": 2, "color": "black"}, showscale=False)
        figure.add_scatter(
            x=shown[rows, 0],
            y=shown[rows, 1],
            mode="markers",
            name=f"person {highlight}, {kind}",
            legendgroup="highlight",
            marker=marker,
            text=[_hover(points, kind, r) for r in rows],
            hovertemplate="%{text}<extra></extra>",
            customdata=np.stack([rows], axis=1),
        )
    annotations = []
    if trail is not None:
        figure.add_scatter(
            x=trail[:, 0],
            y=trail[:, 1],
            mode="lines+markers",
            name="query: clean → occluded",
            legendgroup="kinds",
            text=["clean", "occluded"],
            hovertemplate="this query, %{text}<extra></extra>",
            line={"color": "black", "width": 2, "dash": "dot"},
            marker={"size": 14, "symbol": ["circle-open", "x"], "color": "black"},
        )
        for (x, y), label, (ax, ay) in zip(trail, ("clean", "occluded"), ((-45, -35), (45, 35))):
            annotations.append(
                {"x": x, "y": y, "text": label, "ax": ax, "ay": ay, "showarrow": True, "arrowhead": 0,
                 "bgcolor": "rgba(255,255,255,0.85)", "font": {"size": 13}}
            )  # fmt: skip
    repeat = len(colours) > len(PALETTE)
    if colour_by == "identity" and not repeat:  # the legend: colour → person (legend-only entries)
        for pid, colour in colours.items():
            figure.add_scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=f"person {pid}",
                legendgroup="persons",
                marker={"symbol": "square", "size": 12, "color": colour},
                hoverinfo="skip",
            )
    hidden = int(foreign.sum())
    title = f"{points.note}; {NOTES.get(colour_by, '')}"
    if colour_by == "identity" and repeat:
        title += f"<br>{len(colours)} persons share {len(PALETTE)} colours: hover names a point's person"
    if highlight is not None:
        title += (
            f"<br>person {highlight}: {int(marked.sum())} points, outlined"
            if marked.any()
            else (f"<br>person {highlight} is not on this map")
        )
    if hidden:
        title += f"<br>{hidden} prototypes of training identities outside the benchmark are not drawn"
    figure.update_layout(
        height=560,
        margin={"l": 10, "r": 10, "t": 60, "b": 60},
        dragmode="lasso",
        title={"text": title, "font": {"size": 13}},
        legend={"orientation": "h", "y": -0.02, "yanchor": "top"},
        annotations=annotations,
        xaxis={"showticklabels": False},
        yaxis={"showticklabels": False},
    )
    return figure
