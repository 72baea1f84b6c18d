"""Person silhouettes of a static-camera benchmark by background subtraction.

PETS09-S2L1 is filmed by one fixed camera, so the per-pixel median of its frames is the empty scene (people
move; the post and the sign stay). A crop's person mask is where the crop differs from the same box of that
background. The static occluders count as background, which is what patch transfer needs: they are "not
person" and get transferred. Another person inside the box counts as foreground.

These masks supervise the saliency head and, when the dataset provides them, guide patch transfer
(`aug.saliency_source`). Without them, SPT's saliency objective alone learnt the background here: in one
video the background of a track identifies its person as well as the person does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from dpmpp.data.records import ReIDRecord

BACKGROUND = Path("source") / "background.png"
THRESHOLD = 28  # max channel difference (0-255) after a 3x3 blur that counts as foreground
_BOX_KEYS = ("bbox_left", "bbox_top", "bbox_width", "bbox_height")


def median_background(frames) -> np.ndarray:
    """Per-pixel median of an iterable of [H, W, 3] uint8 frames -> [H, W, 3] uint8."""
    stack = np.stack(list(frames))
    if stack.ndim != 4 or stack.shape[-1] != 3:
        raise ValueError(f"expected frames of shape [H, W, 3]; got a stack of shape {stack.shape}")
    return np.median(stack, axis=0).astype(np.uint8)


def box_slice(meta: dict, frame_size: tuple[int, int]) -> tuple[slice, slice]:
    """The pixel rows and columns of a manifest box clipped to the frame, rounded as the crops were cut."""
    width, height = frame_size
    left, top = float(meta["bbox_left"]), float(meta["bbox_top"])
    x0, y0 = max(0, int(round(left))), max(0, int(round(top)))
    x1 = min(width, int(round(left + float(meta["bbox_width"]))))
    y1 = min(height, int(round(top + float(meta["bbox_height"]))))
    return slice(y0, y1), slice(x0, x1)


def silhouette(crop: np.ndarray, background: np.ndarray, threshold: int = THRESHOLD) -> np.ndarray:
    """[h, w, 3] crop and the same box of the background -> bool person mask [h, w]."""
    if crop.shape != background.shape:
        raise ValueError(f"crop {crop.shape} and background box {background.shape} differ in shape")
    blur = ImageFilter.GaussianBlur(1)
    a = np.asarray(Image.fromarray(crop).filter(blur), dtype=np.int16)
    b = np.asarray(Image.fromarray(background).filter(blur), dtype=np.int16)
    mask = Image.fromarray(((np.abs(a - b).max(axis=2) > threshold) * 255).astype(np.uint8))
    mask = mask.filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.MinFilter(3))  # close small holes
    mask = mask.filter(ImageFilter.MinFilter(3)).filter(ImageFilter.MaxFilter(3))  # drop isolated specks
    return np.asarray(mask) > 127


class PersonMasks:
    """`masks(record, crop)` -> bool [h, w] person mask of a crop, from the benchmark's background image."""

    def __init__(self, background: np.ndarray, threshold: int = THRESHOLD) -> None:
        self.background, self.threshold = background, threshold

    @classmethod
    def for_root(cls, root: str | Path) -> "PersonMasks | None":
        """The masks of a dataset folder that carries `source/background.png`, else None."""
        path = Path(root) / BACKGROUND
        if not path.is_file():
            return None
        return cls(np.asarray(Image.open(path).convert("RGB")))

    def __call__(self, record: ReIDRecord, crop: np.ndarray) -> np.ndarray:
        if any(key not in record.meta for key in _BOX_KEYS):
            raise ValueError(f"{record.path}: a person mask needs the manifest's box columns {_BOX_KEYS}")
        rows, columns = box_slice(record.meta, (self.background.shape[1], self.background.shape[0]))
        return silhouette(crop, self.background[rows, columns], self.threshold)
