"""The occluder bank of real crops that the app pastes onto queries: the lamp post, its sign, and pedestrians."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from dpmpp.atomic import write_text
from dpmpp.data.pets09_geometry import POLE, SIGN, Box

POLE_MARGIN = 4  # pixels of scene kept on each side of the post, fully transparent
BANK_COLUMNS = ["name", "kind", "path", "source"]


def clear_scene_frame(boxes: list[Box]) -> int:
    """The first frame in which no annotated person overlaps the post or its sign (both then fully visible)."""
    x0, y0, x1, y1 = min(POLE[0], SIGN[0]), POLE[1], max(POLE[2], SIGN[2]), POLE[3]
    busy = {b.frame for b in boxes if b.left < x1 and b.left + b.width > x0 and b.top < y1 and b.bottom > y0}
    frames = sorted({b.frame for b in boxes})
    return next(f for f in frames if f not in busy)


def _rgba(frame_rgb: np.ndarray, rect: tuple[int, int, int, int], opaque: tuple[int, int, int, int]) -> Image.Image:
    x0, y0, x1, y1 = rect
    rgba = np.zeros((y1 - y0, x1 - x0, 4), np.uint8)
    rgba[..., :3] = frame_rgb[y0:y1, x0:x1]
    ox0, oy0, ox1, oy1 = opaque
    rgba[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0, 3] = 255
    return Image.fromarray(rgba)


def write_bank(frame_rgb: np.ndarray, frame: int, rows: list[dict], out: Path) -> list[dict]:
    """Write occluders/{pole,sign,person_*}.png and occluders/bank.csv under `out`."""
    folder = out / "occluders"
    folder.mkdir(parents=True, exist_ok=True)
    entries = []

    def save(name: str, kind: str, image: Image.Image, source: str) -> None:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        (folder / f"{name}.png").write_bytes(buffer.getvalue())
        entries.append({"name": name, "kind": kind, "path": f"{name}.png", "source": source})

    pole_rect = (POLE[0] - POLE_MARGIN, POLE[1], POLE[2] + POLE_MARGIN, POLE[3])
    save(
        "pole",
        "pole",
        _rgba(frame_rgb, pole_rect, POLE),
        f"frame {frame}, x {POLE[0]}-{POLE[2]}, y {POLE[1]}-{POLE[3]}",
    )
    save("sign", "sign", _rgba(frame_rgb, SIGN, SIGN), f"frame {frame}, x {SIGN[0]}-{SIGN[2]}, y {SIGN[1]}-{SIGN[3]}")
    # One unoccluded training crop per person, the largest (nearest the camera) of each.
    best: dict[str, dict] = {}
    for row in rows:
        if row["role"] == "train" and float(row["occluded_fraction"]) == 0.0:
            current = best.get(row["person"])
            if current is None or float(row["bbox_height"]) > float(current["bbox_height"]):
                best[row["person"]] = row
    for person in sorted(best):
        row = best[person]
        with Image.open(out / row["path"]) as crop:
            save(f"person_{person}", "person", crop.convert("RGBA"), row["path"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=BANK_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(entries)
    write_text(folder / "bank.csv", buffer.getvalue())
    return entries
