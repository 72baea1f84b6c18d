"""Heat-map and mask overlays on images (numpy / PIL)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def _colormap(values: np.ndarray) -> np.ndarray:
    """[H, W] in [0, 1] -> [H, W, 3] uint8, a blue→yellow→red ramp."""
    v = np.clip(values, 0, 1)[..., None]
    low, mid, high = np.array([30, 60, 200]), np.array([250, 220, 40]), np.array([220, 30, 30])
    rgb = np.where(v < 0.5, low + (mid - low) * (v / 0.5), mid + (high - mid) * ((v - 0.5) / 0.5))
    return rgb.astype(np.uint8)


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """Blend a [h, w] map (any resolution, values in [0, 1]) over an [H, W, 3] uint8 image."""
    height, width = image.shape[:2]
    heat_img = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8)).resize((width, height), Image.NEAREST)
    colours = _colormap(np.asarray(heat_img) / 255.0)
    return Image.fromarray((image * (1 - alpha) + colours * alpha).astype(np.uint8))


def mask_overlay(image: np.ndarray, mask: np.ndarray, colour=(255, 0, 255), alpha: float = 0.55) -> Image.Image:
    """Tint the pixels where a [h, w] bool mask is False (the part not kept), at image resolution."""
    height, width = image.shape[:2]
    full = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)) > 127
    out = image.astype(np.float32).copy()
    out[~full] = out[~full] * (1 - alpha) + np.array(colour) * alpha
    return Image.fromarray(out.astype(np.uint8))


def enlarge(image, height: int = 256) -> Image.Image:
    """Nearest-neighbour upscaling so that small crops stay legible on screen."""
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    return image.resize((max(1, round(image.width * height / image.height)), height), Image.NEAREST)
