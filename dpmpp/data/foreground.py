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

from dpmpp.data.pets09_geometry import read_gt
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


def clipped_bounds(left: float, top: float, width: float, height: float, frame_size) -> tuple[int, int, int, int]:
    """Integer (x0, y0, x1, y1) of a box clipped to a (width, height) frame: how the benchmark's crops are cut."""
    x0, y0 = max(0, int(round(left))), max(0, int(round(top)))
    x1 = min(frame_size[0], int(round(left + width)))
    y1 = min(frame_size[1], int(round(top + height)))
    return x0, y0, x1, y1


def box_slice(meta: dict, frame_size: tuple[int, int]) -> tuple[slice, slice]:
    """The pixel rows and columns of a manifest box (its bbox_* fields) clipped to a (width, height) frame."""
    x0, y0, x1, y1 = clipped_bounds(*(float(meta[key]) for key in _BOX_KEYS), frame_size)
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
    """`masks(record, crop)` -> bool [h, w] person mask of a crop, from the benchmark's background image.

    `boxes`: frame -> [(track, bottom, (x0, y0, x1, y1))] of every annotated person; given, the boxes of persons
    nearer the camera (a lower bottom edge, as in pets09_geometry.occlusion) are removed from the crop's mask.
    """

    def __init__(
        self, background: np.ndarray, threshold: int = THRESHOLD, boxes: dict[int, list[tuple]] | None = None
    ) -> None:
        self.background, self.threshold, self.boxes = background, threshold, boxes
        self._cache: dict[str, np.ndarray] = {}  # a crop's mask is fixed: computed once per file, not per epoch

    @classmethod
    def for_root(cls, root: str | Path, nearer_persons: bool = False) -> "PersonMasks | None":
        """The masks of a dataset folder that carries `source/background.png`, else None."""
        path = Path(root) / BACKGROUND
        if not path.is_file():
            return None
        gt = Path(root) / GROUND_TRUTH
        if nearer_persons and not gt.is_file():
            raise ValueError(f"cutting out nearer persons needs the ground truth boxes {gt}; it is missing")
        background = np.asarray(Image.open(path).convert("RGB"))
        boxes = _boxes_by_frame(gt, (background.shape[1], background.shape[0])) if nearer_persons else None
        return cls(background, boxes=boxes)

    def __call__(self, record: ReIDRecord, crop: np.ndarray) -> np.ndarray:
        if any(key not in record.meta for key in _BOX_KEYS):
            raise ValueError(f"{record.path}: a person mask needs the manifest's box columns {_BOX_KEYS}")
        if record.path not in self._cache:
            self._cache[record.path] = self._compute(record, crop)
        return self._cache[record.path].copy()

    def _compute(self, record: ReIDRecord, crop: np.ndarray) -> np.ndarray:
        rows, columns = box_slice(record.meta, (self.background.shape[1], self.background.shape[0]))
        mask = silhouette(crop, self.background[rows, columns], self.threshold)
        if self.boxes is not None:
            own_bottom = float(record.meta["bbox_top"]) + float(record.meta["bbox_height"])
            for track, bottom, (x0, y0, x1, y1) in self.boxes.get(int(record.meta["frame"]), []):
                if track != int(record.meta["track"]) and bottom > own_bottom:  # nearer the camera: an occluder
                    a0, a1 = max(x0 - columns.start, 0), max(x1 - columns.start, 0)
                    b0, b1 = max(y0 - rows.start, 0), max(y1 - rows.start, 0)
                    mask[b0:b1, a0:a1] = False
        return mask


GROUND_TRUTH = Path("source") / "gt.txt"


def _boxes_by_frame(gt: Path, frame_size: tuple[int, int]) -> dict[int, list[tuple]]:
    """MOT gt.txt (conf 1 rows) -> frame -> [(track, bottom, (x0, y0, x1, y1))], rounded as the crops are cut."""
    boxes: dict[int, list[tuple]] = {}
    for box in read_gt(gt):
        bounds = clipped_bounds(box.left, box.top, box.width, box.height, frame_size)
        boxes.setdefault(box.frame, []).append((box.track, box.bottom, bounds))
    return boxes
