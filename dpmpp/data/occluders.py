"""Synthetic occlusion of a query with real pixels: paste an occluder from a bank, or paint a region.

Patch transfer (the third way) lives in `dpmpp.data.patch_transfer`. Everything here is plain PIL/numpy.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from dpmpp.data.images import load_image

FILLS = ("grey", "black", "blur", "noise")


@dataclass(frozen=True)
class Occluder:
    name: str
    kind: str  # "pole", "sign", "person"
    path: str


@dataclass(frozen=True)
class PasteParams:
    occluder: str  # bank name
    x: float  # occluder centre, as a fraction of the image width
    y: float  # occluder centre, as a fraction of the image height
    scale: float  # occluder height as a fraction of the image height

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class OcclusionResult:
    image: Image.Image  # the occluded image, same size as the input
    mask: np.ndarray  # [H, W] bool, True where the occluder covers the person crop
    occluded_fraction: float


def load_bank(folder: str | Path) -> list[Occluder]:
    """The occluder bank listed in `folder/bank.csv` (name, kind, path)."""
    folder = Path(folder)
    index = folder / "bank.csv"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: no occluder bank (built by `python -m dpmpp build-data pets09`)")
    with open(index, newline="") as handle:
        return [Occluder(row["name"], row["kind"], str(folder / row["path"])) for row in csv.DictReader(handle)]


def paste(image, occluder_image, params: PasteParams) -> OcclusionResult:
    """Alpha-composite the occluder onto the image, centred at (x, y), `scale` of the image height."""
    base = load_image(image)
    occluder = occluder_image if isinstance(occluder_image, Image.Image) else Image.open(occluder_image)
    occluder = occluder.convert("RGBA")
    if not 0 < params.scale <= 3:
        raise ValueError(f"scale {params.scale} outside (0, 3]")
    height = max(1, round(params.scale * base.height))
    width = max(1, round(occluder.width * height / occluder.height))
    occluder = occluder.resize((width, height), Image.BILINEAR)
    left = round(params.x * base.width - width / 2)
    top = round(params.y * base.height - height / 2)
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    layer.paste(occluder, (left, top))
    composed = Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB")
    mask = np.asarray(layer)[..., 3] > 127
    return OcclusionResult(composed, mask, float(mask.mean()))


def paint(image, mask: np.ndarray, fill: str = "grey", seed: int = 0) -> OcclusionResult:
    """Replace the pixels under `mask` [H, W] (bool, or alpha > 127) with a fill."""
    base = load_image(image)
    mask = np.asarray(mask)
    mask = mask > 127 if mask.dtype == np.uint8 else mask.astype(bool)
    if mask.shape != (base.height, base.width):
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {base.width}x{base.height}")
    pixels = np.asarray(base).copy()
    if fill == "grey":
        pixels[mask] = 128
    elif fill == "black":
        pixels[mask] = 0
    elif fill == "blur":
        pixels[mask] = np.asarray(base.filter(ImageFilter.GaussianBlur(radius=max(base.size) / 12)))[mask]
    elif fill == "noise":
        pixels[mask] = np.random.default_rng(seed).integers(0, 256, (int(mask.sum()), 3), dtype=np.uint8)
    else:
        raise ValueError(f"unknown fill {fill!r}; expected one of {FILLS}")
    return OcclusionResult(Image.fromarray(pixels), mask, float(mask.mean()))
