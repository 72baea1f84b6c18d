"""Build the bundled CUHK01 folder: every image re-encoded as JPEG, plus a synthetic occluded copy of each
camera-A image (the queries of `cuhk01_occ`).

The occlusion is synthetic and deterministic: each copy depends only on the image's name and `SEED`. Occluders
are real pixels from the PETS09 occluder bank (`assets/pets09_occ/occluders`): the silhouettes of ten other
pedestrians (none of them a CUHK01 identity, so never a test identity of any split), a sign and a pole, in the
proportions of pets09_occ's real occluders. A copy is redrawn until the occluder hides a fraction of the crop
in the kind's range below, so queries are neither untouched nor erased.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dpmpp.atomic import atomic_path, write_text
from dpmpp.data.datasets import cuhk01
from dpmpp.data.images import load_image
from dpmpp.data.occluders import Occluder, PasteParams, load_bank, paste

logger = logging.getLogger(__name__)

SEED = 2012  # the occlusion of image NNNNMMM is drawn from default_rng([SEED, NNNN, MMM])
JPEG_QUALITY = 95  # see assets/cuhk01/README.md: a third of the PNGs' size, zero-shot rank-1 within 0.7
KIND_WEIGHTS = {"person": 0.5, "sign": 0.3, "pole": 0.2}  # pets09_occ's queries: 109 person, 62 sign, 42 pole
FRACTION_RANGE = {"person": (0.25, 0.6), "sign": (0.15, 0.45), "pole": (0.12, 0.35)}  # of the crop hidden
MAX_DRAWS = 50
COLUMNS = ["image", "path", "occluder", "occluder_kind", "x", "y", "scale", "occluded_fraction"]


@dataclass(frozen=True)
class Occlusion:
    image: Image.Image
    occluder: Occluder
    params: PasteParams
    fraction: float


def _place(
    kind: str, occluder: Image.Image, size: tuple[int, int], rng: np.random.Generator
) -> tuple[Image.Image, tuple]:
    """Where an occluder of `kind` stands in front of the person: (resized pixels, (x, y, scale)) for `paste`."""
    width, height = size
    side = rng.choice([-1.0, 1.0])
    if kind == "person":  # a nearer pedestrian passing at one side, feet near the bottom edge
        scale = rng.uniform(0.9, 1.3)
        return occluder, (0.5 + side * rng.uniform(0.15, 0.45), 1.0 - scale / 2 + rng.uniform(0.0, 0.12), scale)
    if kind == "sign":  # a board at waist to knee height
        return occluder, (rng.uniform(0.2, 0.8), rng.uniform(0.5, 0.85), rng.uniform(0.3, 0.55))
    # A pole: the bank's is 20x362, a hairline at crop height; close to the camera it is wider, 12-30 % of the crop
    pole_width = max(2, round(width * rng.uniform(0.12, 0.3)))
    occluder = occluder.resize((pole_width, round(occluder.height * pole_width / occluder.width)), Image.BILINEAR)
    return occluder, (0.5 + side * rng.uniform(0.0, 0.3), 0.5, occluder.height / height)


def occlude(image: Image.Image, bank: list[Occluder], rng: np.random.Generator) -> Occlusion:
    """One synthetic occlusion of `image` by a bank occluder, its hidden fraction in the kind's range."""
    by_kind = {kind: [o for o in bank if o.kind == kind] for kind in KIND_WEIGHTS}
    missing = [kind for kind, found in by_kind.items() if not found]
    if missing:
        raise ValueError(f"the occluder bank has no {missing} occluders; expected kinds {list(KIND_WEIGHTS)}")
    kinds, weights = list(KIND_WEIGHTS), np.array(list(KIND_WEIGHTS.values()))
    kind = kinds[rng.choice(len(kinds), p=weights / weights.sum())]
    low, high = FRACTION_RANGE[kind]
    best = None
    for _ in range(MAX_DRAWS):
        occluder = by_kind[kind][rng.integers(len(by_kind[kind]))]
        pixels, (x, y, scale) = _place(kind, Image.open(occluder.path).convert("RGBA"), image.size, rng)
        params = PasteParams(occluder.name, float(x), float(y), float(scale))
        result = paste(image, pixels, params)
        candidate = Occlusion(result.image, occluder, params, result.occluded_fraction)
        if low <= result.occluded_fraction <= high:
            return candidate
        if best is None or abs(result.occluded_fraction - (low + high) / 2) < abs(best.fraction - (low + high) / 2):
            best = candidate
    return best


def _write_jpeg(image: Image.Image, path: Path) -> None:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def build(source: str | Path, out: str | Path, bank_folder: str | Path) -> list[dict]:
    """Write `out/images/*.jpg`, `out/occluded/*.jpg` and `out/occlusions.csv` from the release in `source`."""
    source, out = Path(source), Path(out)
    by_pid = cuhk01.read_records(source)  # checks the layout: 971 identities x 4 images
    bank = load_bank(bank_folder)
    rows = []
    for pid in sorted(by_pid):
        for record in by_pid[pid]:
            name = Path(record.path).stem
            image = load_image(record.path)
            _write_jpeg(image, out / "images" / f"{name}.jpg")
            if record.camid != 0:
                continue
            occlusion = occlude(image, bank, np.random.default_rng([SEED, pid, record.meta["image"]]))
            _write_jpeg(occlusion.image, out / cuhk01.OCCLUDED_DIR / f"{name}.jpg")
            rows.append(
                {
                    "image": name,
                    "path": f"{name}.jpg",
                    "occluder": occlusion.occluder.name,
                    "occluder_kind": occlusion.occluder.kind,
                    "x": f"{occlusion.params.x:.4f}",
                    "y": f"{occlusion.params.y:.4f}",
                    "scale": f"{occlusion.params.scale:.4f}",
                    "occluded_fraction": f"{occlusion.fraction:.4f}",
                }
            )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / cuhk01.OCCLUSION_INDEX, buffer.getvalue())
    logger.info("wrote %d images and %d occluded copies to %s", 4 * len(by_pid), len(rows), out)
    return rows
