"""Ranked-retrieval strips in the field's convention: blue query, green correct, red wrong."""

from __future__ import annotations

from PIL import Image, ImageDraw

from dpmpp.data.images import load_image

BLUE, GREEN, RED = (40, 90, 220), (30, 160, 60), (210, 40, 40)


def bordered(
    path_or_image, colour: tuple[int, int, int], size: tuple[int, int] = (64, 128), border: int = 4
) -> Image.Image:
    image = load_image(path_or_image).resize(size, Image.BILINEAR)
    framed = Image.new("RGB", (size[0] + 2 * border, size[1] + 2 * border), colour)
    framed.paste(image, (border, border))
    return framed


def rank_strip(query, results: list[tuple[str, bool, float]], size: tuple[int, int] = (64, 128)) -> Image.Image:
    """query image + (path, correct, score) per rank -> one strip with rank and score under each crop."""
    tiles = [bordered(query, BLUE, size)] + [bordered(p, GREEN if ok else RED, size) for p, ok, _ in results]
    gap, caption = 10, 18
    width = sum(t.width for t in tiles) + gap * len(tiles)
    strip = Image.new("RGB", (width, tiles[0].height + caption), "white")
    draw = ImageDraw.Draw(strip)
    x = 0
    for index, tile in enumerate(tiles):
        strip.paste(tile, (x, 0))
        label = "query" if index == 0 else f"#{index} {results[index - 1][2]:.3f}"
        draw.text((x + 2, tile.height + 3), label, fill=(20, 20, 20))
        x += tile.width + gap
    return strip
