"""Occlusion of PETS09-S2L1 boxes estimated from scene geometry (no pixels are read).

The MOT boxes are full-body extents interpolated through occlusion, so what hides a person can be computed:
the lamp post and its sign hide people standing behind them (box bottom above the post's foot), a nearer
person (lower box bottom on the ground plane) hides a farther one, and the frame border cuts boxes off.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FRAME_WIDTH, FRAME_HEIGHT = 768, 576
# Scene occluders in pixel coordinates (x0, y0, x1, y1), from the data's README.
POLE = (424, 30, 436, 392)
SIGN = (413, 203, 444, 243)
POLE_FOOT_Y = 392  # people whose feet are above this line stand behind the post
OCCLUDER_TYPES = ("none", "person", "pole", "sign", "border")


@dataclass(frozen=True)
class Box:
    frame: int
    track: int
    left: float
    top: float
    width: float
    height: float

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def pixel_bounds(self) -> tuple[int, int, int, int]:
        """Integer (x0, y0, x1, y1), unclipped."""
        x0, y0 = int(round(self.left)), int(round(self.top))
        return x0, y0, x0 + max(1, int(round(self.width))), y0 + max(1, int(round(self.height)))


def occlusion(box: Box, same_frame: list[Box]) -> tuple[float, str, dict[str, float]]:
    """Fraction of `box` hidden (union over occluders) and the type of the largest occluder.

    Returns (occluded_fraction, occluder_type, per-type fractions).
    """
    x0, y0, x1, y1 = box.pixel_bounds()
    w, h = x1 - x0, y1 - y0
    covered = {name: np.zeros((h, w), dtype=bool) for name in OCCLUDER_TYPES[1:]}

    def paint(name: str, rect: tuple[float, float, float, float]) -> None:
        a0, b0 = max(int(round(rect[0])) - x0, 0), max(int(round(rect[1])) - y0, 0)
        a1, b1 = min(int(round(rect[2])) - x0, w), min(int(round(rect[3])) - y0, h)
        if a1 > a0 and b1 > b0:
            covered[name][b0:b1, a0:a1] = True

    for other in same_frame:
        if other.track != box.track and other.bottom > box.bottom:  # nearer to the camera
            ox0, oy0, ox1, oy1 = other.pixel_bounds()
            paint("person", (ox0, oy0, ox1, oy1))
    if box.bottom < POLE_FOOT_Y:
        paint("pole", POLE)
        paint("sign", SIGN)
    inside = np.zeros((h, w), dtype=bool)
    inside[max(0, -y0) : max(0, min(h, FRAME_HEIGHT - y0)), max(0, -x0) : max(0, min(w, FRAME_WIDTH - x0))] = True
    covered["border"] = ~inside
    union = np.zeros((h, w), dtype=bool)
    for mask in covered.values():
        union |= mask
    fractions = {name: float(mask.mean()) for name, mask in covered.items()}
    total = float(union.mean())
    kind = max(fractions, key=fractions.get) if total > 0 else "none"
    return total, kind, fractions


def occluding_track(box: Box, same_frame: list[Box]) -> int | None:
    """The track of the nearer person that hides the largest part of `box` (ties: the lower track id), or None."""
    x0, y0, x1, y1 = box.pixel_bounds()
    best, best_area = None, 0
    for other in sorted(same_frame, key=lambda b: b.track):
        if other.track == box.track or other.bottom <= box.bottom:  # only persons nearer the camera occlude
            continue
        ox0, oy0, ox1, oy1 = other.pixel_bounds()
        area = max(0, min(x1, ox1) - max(x0, ox0)) * max(0, min(y1, oy1) - max(y0, oy0))
        if area > best_area:
            best, best_area = other.track, area
    return best


def read_gt(gt_path: str | Path) -> list[Box]:
    """MOTChallenge gt.txt rows with conf 1 (evaluated boxes); frame numbers are 1-based."""
    rows = np.loadtxt(gt_path, delimiter=",", ndmin=2)
    if rows.shape[1] < 7:
        raise ValueError(
            f"{gt_path}: expected MOT rows frame,id,left,top,width,height,conf,...; got {rows.shape[1]} columns"
        )
    return [Box(int(r[0]), int(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5])) for r in rows if r[6] == 1]
