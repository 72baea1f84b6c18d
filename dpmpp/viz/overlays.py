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


def colour_bar(height: int, width: int = 16) -> Image.Image:
    """The heat ramp as a vertical bar, high at the top."""
    ramp = np.linspace(1, 0, height)[:, None].repeat(width, axis=1)
    return Image.fromarray(_colormap(ramp))


def heat_panel(items: list[tuple[np.ndarray, np.ndarray, str]], height: int = 320) -> Image.Image:
    """Heat maps over their images side by side, a title above each, and a colour bar (low → high) at the right.

    items: (image [H, W, 3] uint8, heat [h, w] in [0, 1], title; a newline starts its second line). One picture
    of fixed height, so it fits a panel.
    """
    from PIL import ImageDraw, ImageFont

    font, title_h, gap = ImageFont.load_default(size=15), 42, 16
    tiles = [enlarge(heat_overlay(image, heat, 0.45), height) for image, heat, _ in items]
    bar = colour_bar(height)
    legend_w = 110
    width = sum(t.width for t in tiles) + gap * len(tiles) + bar.width + legend_w
    panel = Image.new("RGB", (width, height + title_h), "white")
    draw = ImageDraw.Draw(panel)
    x = 0
    for tile, (_, _, title) in zip(tiles, items):
        panel.paste(tile, (x, title_h))
        for line, text in enumerate(title.split("\n")):
            draw.text((x, 3 + 18 * line), text, fill=(20, 20, 20), font=font)
        x += tile.width + gap
    panel.paste(bar, (x, title_h))
    for text, y in (("high: drives", title_h), ("the match", title_h + 17), ("low: ignored", title_h + height - 34)):
        draw.text((x + bar.width + 6, y), text, fill=(20, 20, 20), font=font)
    draw.text((x + bar.width + 6, title_h + height // 2 - 8), "Grad-CAM", fill=(90, 90, 90), font=font)
    return panel
