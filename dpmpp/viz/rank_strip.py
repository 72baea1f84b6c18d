"""Ranked-retrieval strips in the field's convention: blue query, green correct, red wrong (grey: unknown)."""

from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageDraw

from dpmpp.data.images import load_image

BLUE, GREEN, RED, GREY = (40, 90, 220), (30, 160, 60), (210, 40, 40), (150, 150, 150)


@lru_cache(maxsize=640)  # gallery crops recur in every ranking; 640 crops of 128x256 hold about 60 MB
def _gallery_crop(path: str, size: tuple[int, int]) -> Image.Image:
    return load_image(path).resize(size, Image.BILINEAR)


def preload(paths: list[str], size: tuple[int, int], font_size: int, persons: list[int]) -> int:
    """Read and scale `paths` into the crop cache (as many as it holds) and render the captions a strip uses (ranks,
    scores to three decimals, person names), so that the first strips a class asks for at once do not decode and
    render them all under the interpreter lock. Returns the number of crops read."""
    paths = list(dict.fromkeys(paths))[: _gallery_crop.cache_info().maxsize]
    for path in paths:
        _gallery_crop(path, tuple(size))
    captions = [f"#{rank}" for rank in range(1, 21)] + [f"P{pid:02d}" for pid in persons]
    captions += [f"{score / 1000:.3f}" for score in range(-1000, 1001)]
    for text in captions[: _text_mask.cache_info().maxsize]:
        _text_mask(text, font_size)
    return len(paths)


@lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


@lru_cache(maxsize=4096)  # ranks, scores and names recur; a few kB each
def _text_mask(text: str, size: int) -> Image.Image:
    """`text` rendered once as an 8-bit coverage mask, its origin where ImageDraw.text puts it. FreeType holds the
    interpreter lock while it renders: thirty students' strips would otherwise render the same captions again."""
    left, top, right, bottom = _font(size).getbbox(text)
    mask = Image.new("L", (max(right, 1), max(bottom, 1)))
    ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=_font(size))
    return mask


def _caption(strip: Image.Image, xy: tuple[int, int], text: str, fill: tuple[int, int, int], size: int) -> None:
    mask = _text_mask(text, size)
    strip.paste(fill, (xy[0], xy[1], xy[0] + mask.width, xy[1] + mask.height), mask)


def caption_size(size: tuple[int, int]) -> int:
    """The caption font size of a strip of crops of `size`."""
    return max(11, size[0] // 6)


def bordered(path_or_image, colour: tuple[int, int, int], size: tuple[int, int] = (64, 128), border: int = 4):
    """The crop at `size`, framed in `colour`; a crop given by its path is read and scaled once (cached)."""
    if isinstance(path_or_image, str):
        image = _gallery_crop(path_or_image, tuple(size))
    else:
        image = load_image(path_or_image).resize(size, Image.BILINEAR)
    framed = Image.new("RGB", (size[0] + 2 * border, size[1] + 2 * border), colour)
    framed.paste(image, (border, border))
    return framed


def rank_strip(
    query,
    results: list[tuple],
    size: tuple[int, int] = (64, 128),
    marks: list[str] | None = None,
) -> Image.Image:
    """query image + (path, correct, score[, who]) per rank -> one strip; under each crop, on lines of their own, the
    rank ("#1"), the score ("0.614") and, where given, who a crop shows (e.g. "P03" under a wrong match).

    `marks` (optional, one per result) is printed above a crop, e.g. "new" for an item that entered the top-k.
    """
    colour = {True: GREEN, False: RED, None: GREY}
    tiles = [bordered(query, BLUE, size)] + [bordered(r[0], colour[r[1]], size) for r in results]
    font_size = caption_size(size)
    line = font_size + 3
    gap, caption, header = 10, 3 * line + 4, 16
    width = sum(t.width for t in tiles) + gap * len(tiles)
    strip = Image.new("RGB", (width, header + tiles[0].height + caption), "white")
    draw = ImageDraw.Draw(strip)
    x = 0
    for index, tile in enumerate(tiles):
        strip.paste(tile, (x, header))
        if index == 0:
            lines = ["query"]
        else:
            result = results[index - 1]
            lines = [f"#{index}", f"{result[2]:.3f}"] + ([str(result[3])] if len(result) > 3 and result[3] else [])
        for row, text in enumerate(lines):
            fill = RED if row == 2 else (20, 20, 20)
            _caption(strip, (x + 2, header + tile.height + 3 + row * line), text, fill, font_size)
        if index > 0 and marks and marks[index - 1]:
            draw.text((x + 2, 2), marks[index - 1], fill=(200, 110, 0))
        x += tile.width + gap
    return strip
