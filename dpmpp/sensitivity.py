"""Occlusion sensitivity: slide an occluder over a query on a grid of positions and score the true match at each.

The map answers "which regions does the model rely on, and where does an occluder break it?" for any model the
explorer holds (a DPM++ checkpoint, a pretrained peer, the HSV floor), so two models can be compared on the same
grid. Every occluded copy of the query is embedded in one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from dpmpp.data.images import load_image
from dpmpp.data.occluders import PasteParams, paste

GREY = "grey block"
GREY_ASPECT = 0.5  # a grey block is half as wide as it is high, like a standing pedestrian or a post
MAX_POSITIONS = 400  # rows x columns of one sweep: bounds the batch a visitor can ask for


@dataclass
class SensitivityMap:
    """The true match's rank, AP and best score with the occluder centred at each grid position."""

    xs: np.ndarray  # [X] occluder centres, fractions of the image width
    ys: np.ndarray  # [Y] occluder centres, fractions of the image height
    rank: np.ndarray  # [Y, X] 1-based rank of the first true match (0: none left)
    ap: np.ndarray  # [Y, X] average precision over the filtered gallery
    score: np.ndarray  # [Y, X] similarity of the best-scoring true match
    covered: np.ndarray  # [Y, X] fraction of the query's pixels the occluder covers
    clean: dict  # {"rank", "ap", "score"} of the query as given
    occluder: str
    scale: float  # occluder height, a fraction of the image height
    use_mask: bool
    model: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON values (NaN as None), for a case file."""
        plain = lambda a: [[None if not np.isfinite(v) else round(float(v), 5) for v in row] for row in a]  # noqa: E731
        return {
            "model": self.model,
            "occluder": self.occluder,
            "scale": float(self.scale),
            "use_mask": bool(self.use_mask),
            "xs": [round(float(x), 5) for x in self.xs],
            "ys": [round(float(y), 5) for y in self.ys],
            **{name: plain(getattr(self, name)) for name in ("rank", "ap", "score", "covered")},
            "clean": {k: None if v is None or not np.isfinite(v) else float(v) for k, v in self.clean.items()},
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict) -> SensitivityMap:
        grid = lambda name: np.array(data[name], dtype=float)  # None -> NaN  # noqa: E731
        return cls(
            xs=np.asarray(data["xs"], float),
            ys=np.asarray(data["ys"], float),
            rank=grid("rank"),
            ap=grid("ap"),
            score=grid("score"),
            covered=grid("covered"),
            clean={k: float("nan") if v is None else v for k, v in data["clean"].items()},
            occluder=data["occluder"],
            scale=data["scale"],
            use_mask=data["use_mask"],
            model=data.get("model", ""),
            notes=list(data.get("notes", [])),
        )

    @property
    def worst(self) -> tuple[float, float] | None:
        """(x, y) of the position where the AP drops most (the first such position), or None without an AP."""
        if not np.isfinite(self.ap).any():
            return None
        row, col = np.unravel_index(int(np.nanargmin(self.ap)), self.ap.shape)
        return float(self.xs[col]), float(self.ys[row])


def grid_positions(rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Occluder centres spread evenly inside the image (cell centres of a rows x columns grid)."""
    if rows < 1 or columns < 1 or rows * columns > MAX_POSITIONS:
        raise ValueError(f"a sweep needs 1 to {MAX_POSITIONS} positions; got {rows} x {columns}")
    return (np.arange(columns) + 0.5) / columns, (np.arange(rows) + 0.5) / rows


def grey_block(height: int) -> Image.Image:
    """An opaque mid-grey block `height` pixels high (the paste scales it to the asked size)."""
    return Image.new("RGBA", (max(1, round(height * GREY_ASPECT)), height), (128, 128, 128, 255))


def person_occluder(image) -> Image.Image:
    """Another person's crop as an opaque occluder: a pedestrian walking in front."""
    return load_image(image).convert("RGBA")


def occluded_copies(image, occluder: Image.Image, xs, ys, scale: float) -> tuple[list[Image.Image], np.ndarray]:
    """The query with `occluder` pasted at every (y, x), row-major, and the covered fraction of each [Y, X]."""
    base = load_image(image)
    copies, covered = [], []
    for y in ys:
        for x in xs:
            result = paste(base, occluder, PasteParams("sweep", float(x), float(y), scale))
            copies.append(result.image)
            covered.append(result.occluded_fraction)
    return copies, np.asarray(covered).reshape(len(ys), len(xs))


def occlusion_sensitivity(
    explorer,
    image,
    pid: int,
    camid: int,
    occluder: Image.Image | None = None,
    occluder_name: str = GREY,
    scale: float = 0.35,
    rows: int = 10,
    columns: int = 5,
    use_mask: bool = True,
) -> SensitivityMap:
    """Sweep `occluder` (default: a grey block) over `image`, a query of identity `pid` seen by `camid`, and rank
    the explorer's gallery for every position in one batch. The gallery must hold a true match of `pid`."""
    if not 0 < scale <= 1:
        raise ValueError(f"occluder scale must be in (0, 1]; got {scale}")
    visible = (explorer.g_pids == pid) & (explorer.g_camids != camid)  # the true matches the rule keeps
    if not visible.any():
        raise ValueError(f"the gallery holds no crop of identity {pid} from another camera: nothing to rank")
    xs, ys = grid_positions(rows, columns)
    base = load_image(image)
    block = occluder if occluder is not None else grey_block(base.height)
    copies, covered = occluded_copies(base, block, xs, ys, scale)
    scores = explorer.scores(explorer.embed([base, *copies]), use_mask)  # [1 + Y*X, G]
    outcomes = []
    for row in scores:
        ranked = explorer.rank(row, pid, camid, top_k=0)
        outcomes.append((ranked.first_true_rank, ranked.ap, float(row[visible].max())))
    clean, swept = outcomes[0], outcomes[1:]
    shape = (len(ys), len(xs))
    return SensitivityMap(
        xs=xs,
        ys=ys,
        rank=np.array([o[0] for o in swept]).reshape(shape),
        ap=np.array([o[1] for o in swept]).reshape(shape),
        score=np.array([o[2] for o in swept]).reshape(shape),
        covered=covered,
        clean={"rank": clean[0], "ap": clean[1], "score": clean[2]},
        occluder=occluder_name,
        scale=scale,
        use_mask=bool(use_mask) and explorer.has_mask,
    )
