"""No-learning floors every trained model must beat."""

from __future__ import annotations

import numpy as np
from PIL import Image

HSV_SIZE = (64, 128)  # (width, height) every crop is resized to before histogramming


def hsv_stripe_features(
    images: list[Image.Image], stripes: int = 6, bins: tuple[int, int, int] = (8, 4, 4)
) -> np.ndarray:
    """Per-horizontal-stripe joint HSV histograms, square-rooted (Hellinger) and L2-normalised. [N, stripes*H*S*V]."""
    hsv = np.stack([np.asarray(im.convert("RGB").resize(HSV_SIZE, Image.BILINEAR).convert("HSV")) for im in images])
    n, height, width, _ = hsv.shape
    bins_array = np.asarray(bins)
    quantised = (hsv.astype(np.int64) * bins_array // 256).clip(0, bins_array - 1)  # [N, H, W, 3]
    colour = (quantised[..., 0] * bins[1] + quantised[..., 1]) * bins[2] + quantised[..., 2]  # [N, H, W]
    stripe = (np.arange(height) * stripes // height)[None, :, None]  # [1, H, 1]
    num_colours = int(np.prod(bins))
    flat = (np.arange(n)[:, None, None] * stripes + stripe) * num_colours + colour
    hist = np.bincount(flat.ravel(), minlength=n * stripes * num_colours).reshape(n, stripes * num_colours)
    feats = np.sqrt(hist / (height * width / stripes))
    return feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(1e-12)


class HSVEmbedder:
    """The HSV floor as an embedder: images (paths, PIL images or arrays) -> unit features [N, D]; no mask."""

    name = "HSV stripe histograms (no learning)"
    has_mask = False

    def embed(self, images) -> np.ndarray:
        from dpmpp.data.images import load_image

        return hsv_stripe_features([load_image(image) for image in images])
