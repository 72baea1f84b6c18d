"""Turning whatever a user hands us (path, bytes, PIL image, numpy array) into an RGB PIL image, or a clear error."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 4096 * 4096  # larger inputs are refused before decoding; a person crop never needs more
MIN_SIDE = 8  # smaller images carry no usable person


class ImageLoadError(ValueError):
    """The input is not an image we can use; the message says what was expected."""


def load_image(source, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Return an RGB PIL image from a path, bytes, PIL image or HxW / HxWxC numpy array."""
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _from_array(source)
    elif isinstance(source, (bytes, bytearray)):
        image = _open(io.BytesIO(source), "uploaded bytes", max_pixels)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageLoadError(f"{path}: no such image file")
        image = _open(path, str(path), max_pixels)
    else:
        raise ImageLoadError(f"expected a path, bytes, PIL image or numpy array; got {type(source).__name__}")
    return _to_rgb(image, max_pixels)


def _open(handle, name: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():  # our own pixel limit below is stricter than PIL's bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(handle)
        if image.width * image.height > max_pixels:
            raise ImageLoadError(
                f"{name}: {image.width}x{image.height} is larger than the limit of {max_pixels} pixels; "
                "crop the person first"
            )
        image.load()  # decode now, so a truncated file fails here and not in a worker
        return ImageOps.exif_transpose(image)
    except ImageLoadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageLoadError(
            f"{name}: not a readable image (JPEG, PNG, TIFF, BMP or WebP expected): {error}"
        ) from error


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageLoadError(f"expected an HxW, HxWx3 or HxWx4 array; got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ImageLoadError("the image array contains NaN or infinite values")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.max(initial=0) <= 1.0:
            array = array * 255.0
        elif array.dtype == np.uint16:
            array = array / 257.0
        array = np.clip(array, 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def _to_rgb(image: Image.Image, max_pixels: int) -> Image.Image:
    if image.width * image.height > max_pixels:
        raise ImageLoadError(f"{image.width}x{image.height} is larger than the limit of {max_pixels} pixels")
    if min(image.size) < MIN_SIDE:
        raise ImageLoadError(f"image is {image.width}x{image.height}; at least {MIN_SIDE} pixels per side expected")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray((array / max(array.max(), 1.0) * 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")
