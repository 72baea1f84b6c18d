"""Plain records for re-ID data. No I/O happens here."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReIDRecord:
    """One image: where it is, who it shows, which camera saw it, and anything else the dataset knows."""

    path: str
    pid: int
    camid: int
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Split:
    """The three lists every re-ID benchmark reduces to."""

    train: list[ReIDRecord]
    query: list[ReIDRecord]
    gallery: list[ReIDRecord]
    name: str = ""
    camid_is_track: bool = False  # camera ids name tracks (one person each): a camera embedding would leak identity

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    def train_pid_map(self) -> dict[int, int]:
        """Original training pid -> contiguous label 0..C-1, in sorted pid order."""
        return {pid: label for label, pid in enumerate(sorted({r.pid for r in self.train}))}

    def summary_rows(self) -> list[tuple[str, int, int, int]]:
        rows = []
        for subset, records in (("train", self.train), ("query", self.query), ("gallery", self.gallery)):
            rows.append((subset, len({r.pid for r in records}), len(records), len({r.camid for r in records})))
        return rows

    def summary(self) -> str:
        """A torchreid-style table: identities, images and cameras per subset."""
        lines = [
            f"=> Loaded {self.name or 'dataset'}",
            "  ----------------------------------------",
            "  subset   | # ids | # images | # cameras",
            "  ----------------------------------------",
        ]
        for subset, ids, images, cameras in self.summary_rows():
            lines.append(f"  {subset:<8} | {ids:5d} | {images:8d} | {cameras:9d}")
        lines.append("  ----------------------------------------")
        return "\n".join(lines)
