"""Ranked-retrieval strips in the field's convention: blue query, green correct, red wrong (grey: unknown)."""

from __future__ import annotations

from PIL import Image, ImageDraw

from dpmpp.data.images import load_image

BLUE, GREEN, RED, GREY = (40, 90, 220), (30, 160, 60), (210, 40, 40), (150, 150, 150)


def bordered(path_or_image, colour: tuple[int, int, int], size: tuple[int, int] = (64, 128), border: int = 4):
    image = load_image(path_or_image).resize(size, Image.BILINEAR)
    framed = Image.new("RGB", (size[0] + 2 * border, size[1] + 2 * border), colour)
    framed.paste(image, (border, border))
    return framed


def rank_strip(
    query,
    results: list[tuple[str, bool | None, float]],
    size: tuple[int, int] = (64, 128),
    marks: list[str] | None = None,
) -> Image.Image:
    """query image + (path, correct, score) per rank -> one strip, rank and score under each crop.

    `marks` (optional, one per result) is printed above a crop, e.g. "new" for an item that entered the top-k.
    """
    colour = {True: GREEN, False: RED, None: GREY}
    tiles = [bordered(query, BLUE, size)] + [bordered(p, colour[ok], size) for p, ok, _ in results]
    gap, caption, header = 10, 18, 16
    width = sum(t.width for t in tiles) + gap * len(tiles)
    strip = Image.new("RGB", (width, header + tiles[0].height + caption), "white")
    draw = ImageDraw.Draw(strip)
    x = 0
    for index, tile in enumerate(tiles):
        strip.paste(tile, (x, header))
        label = "query" if index == 0 else f"#{index} {results[index - 1][2]:.3f}"
        draw.text((x + 2, header + tile.height + 3), label, fill=(20, 20, 20))
        if index > 0 and marks and marks[index - 1]:
            draw.text((x + 2, 2), marks[index - 1], fill=(200, 110, 0))
        x += tile.width + gap
    return strip
