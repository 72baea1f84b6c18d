"""The training status as every page polls it (every 2 s): drawn once for all sessions, sent only when it changed."""

from __future__ import annotations

import threading
import time

import plotly.graph_objects as go

from dpmpp.app import state
from dpmpp.app.common import display, public
from dpmpp.viz.curves import loss_figure


def status_text(status) -> str:
    if status.state == "idle":
        return "No training job has run in this server yet."
    eta = f", ETA {status.eta_s / 60:.1f} min" if status.state == "running" else ""
    speed = f", {status.images_per_s:.0f} images/s" if status.images_per_s else ""
    return public(f"**{status.state}** ({display(status.out_dir)}): {status.message}{speed}{eta}")


FIGURE_EVERY_S = 3.0  # a running job's loss figure is redrawn at most this often, for every session at once


class StatusDrawing:
    """The training status as every session sees it: the text of each version, and the loss figure redrawn when the
    job's state changes or, while it runs, at most every FIGURE_EVERY_S. Plotly takes about 40 ms per figure under
    the interpreter lock; thirty polling pages would otherwise redraw it thirty times every 2 s."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._text: tuple[int, str] = (-1, "")
        self._figure: tuple[int, go.Figure | None] = (0, None)
        self._drawn_state, self._drawn_version, self._drawn_at = None, -1, 0.0

    def now(self) -> tuple[str, int, go.Figure]:
        """(status text, drawing number, figure): the drawing number changes whenever the figure does."""
        status = state.JOBS.status()
        with self._lock:
            if self._text[0] != status.version:
                self._text = (status.version, status_text(status))
            stale = status.version != self._drawn_version and time.monotonic() - self._drawn_at >= FIGURE_EVERY_S
            if self._figure[1] is None or status.state != self._drawn_state or stale:
                self._figure = (self._figure[0] + 1, loss_figure(status.history[-2000:]))
                self._drawn_state, self._drawn_version = status.state, status.version
                self._drawn_at = time.monotonic()
            return self._text[1], *self._figure


STATUS = StatusDrawing()
