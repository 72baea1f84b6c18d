"""Turning whatever a user hands us (path, bytes, PIL image, numpy array) into an RGB PIL image, or a clear error."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 4096 * 4096  # larger inputs are refused before decoding; a person crop never needs more
MIN_SIDE = 8  # smaller images carry no usable person
MAX_ASPECT = 8.0  # longer side / shorter side; a standing person is about 2 to 4, a strip of 1000:1 is no crop


class ImageLoadError(ValueError):
    """The input is not an image we can use; the message says what was expected."""


def load_image(
    source, max_pixels: int = MAX_PIXELS, max_aspect: float = MAX_ASPECT, max_side: int | None = None
) -> Image.Image:
    """Return an RGB PIL image from a path, bytes, PIL image or HxW / HxWxC numpy array.

    Encoded images (paths, bytes) larger than `max_pixels`, or longer than `max_aspect` times their width (or wider
    than that times their height), are refused from their header, before any pixel is decoded. With `max_side`, the
    result is scaled down to fit a `max_side` square (JPEGs are decoded at a reduced scale when they allow it).
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _from_array(source)
    elif isinstance(source, (bytes, bytearray)):
        image = _open(io.BytesIO(source), "uploaded bytes", max_pixels, max_aspect, max_side)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageLoadError(f"{path}: no such image file")
        image = _open(path, str(path), max_pixels, max_aspect, max_side)
    else:
        raise ImageLoadError(f"expected a path, bytes, PIL image or numpy array; got {type(source).__name__}")
    image = _to_rgb(image, max_pixels, max_aspect)
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.BILINEAR)
    return image


def check_size(width: int, height: int, max_pixels: int = MAX_PIXELS, max_aspect: float = MAX_ASPECT) -> None:
    """Raise ImageLoadError for an image of this size that is too large, too small or too elongated to use."""
    if width * height > max_pixels:
        raise ImageLoadError(f"{width}x{height} is larger than the limit of {max_pixels} pixels; crop the person first")
    if min(width, height) < MIN_SIDE:
        raise ImageLoadError(f"image is {width}x{height}; at least {MIN_SIDE} pixels per side expected")
    if max(width, height) > max_aspect * min(width, height):
        raise ImageLoadError(
            f"image is {width}x{height}; a person crop's longer side is at most {max_aspect:g} times its shorter side"
        )


def image_size(source) -> tuple[int, int]:
    """(width, height) of an encoded image (path, bytes or file object) from its header; nothing is decoded."""
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(handle) as image:
                return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageLoadError(f"not a readable image (JPEG, PNG, TIFF, BMP or WebP expected): {error}") from error


def _open(handle, name: str, max_pixels: int, max_aspect: float, max_side: int | None) -> Image.Image:
    try:
        with warnings.catch_warnings():  # our own pixel limit below is stricter than PIL's bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(handle)  # reads the header only
        try:
            check_size(image.width, image.height, max_pixels, max_aspect)
        except ImageLoadError as error:
            raise ImageLoadError(f"{name}: {error}") from None
        if max_side is not None and image.format == "JPEG":
            image.draft("RGB", (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale where that still fits
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


def _to_rgb(image: Image.Image, max_pixels: int, max_aspect: float) -> Image.Image:
    check_size(image.width, image.height, max_pixels, max_aspect)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray((array / max(array.max(), 1.0) * 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")
