"""DukeMTMC-reID and Occluded-Duke readers: one `bounding_box_*` layout, two registrations.

Files look like `0001_c2_f0046182.jpg` (person id, camera, frame). All Occluded-Duke queries are occluded.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from dpmpp.data.datasets import register
from dpmpp.data.datasets.market1501 import read_bounding_box_layout
from dpmpp.data.records import Split

logger = logging.getLogger(__name__)

_FRAME = re.compile(r"-?\d+_c\d+_f(\d+)")


def _duke_meta(filename: str) -> dict[str, Any]:
    match = _FRAME.match(filename)
    return {"frame": int(match.group(1))} if match else {}


@register("dukemtmc")
def load_dukemtmc(root: Path) -> Split:
    return read_bounding_box_layout("dukemtmc", Path(root), ["DukeMTMC-reID"], _duke_meta)


@register("occluded_duke")
def load_occluded_duke(root: Path) -> Split:
    return read_bounding_box_layout("occluded_duke", Path(root), ["Occluded_Duke"], _duke_meta)
