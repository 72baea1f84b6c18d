"""Where the bundled data and models live, so that commands work with no path arguments."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ASSETS = PROJECT_ROOT / "assets"
CHECKPOINTS = PROJECT_ROOT / "checkpoints"
PRETRAINED = ASSETS / "pretrained"  # pretrained peers and foundations (see its README)
DEFAULT_CHECKPOINT = CHECKPOINTS / "dpmpp_omz_cuhk01"  # DPM++ on OMZ 0277, CUHK01 + PETS09 training sets
OSNET_CHECKPOINT = CHECKPOINTS / "dpmpp_osnet_cuhk01"  # the same recipe on OSNet-x0.25 (the ablation grid's model)
PETS09_CHECKPOINT = CHECKPOINTS / "dpmpp_tiny_pets09"  # the tiny CLIP model trained on pets09_occ alone
BUNDLED_DATA_ROOTS = {
    "pets09_occ": ASSETS / "pets09_occ",
    "pets09_holistic": ASSETS / "pets09_occ",
    "pets09_occ_val": ASSETS / "pets09_occ",
    "pets09_holistic_val": ASSETS / "pets09_occ",
    "cuhk01_pets09": ASSETS,
    "cuhk01_pets09_val": ASSETS,
    **{name: ASSETS / "cuhk01" for name in ("cuhk01", "cuhk01_occ", "cuhk01_val", "cuhk01_occ_val")},
}


def default_root(dataset: str) -> Path | None:
    """The bundled folder of `dataset`, or None when the user must name one."""
    return BUNDLED_DATA_ROOTS.get(dataset)
