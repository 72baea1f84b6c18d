"""A case: everything needed to reload one error-analysis view (query, occluder, checkpoint, mask, top-k)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

CASE_VERSION = 1


class CaseError(ValueError):
    """A case file is not valid JSON of the expected shape."""


@dataclass
class Case:
    query_index: int  # index into the benchmark's query list (-1: an uploaded image, not reloadable)
    query_file: str
    dataset: str
    checkpoint: str  # checkpoint folder name
    checkpoint_hash: str  # short SHA-256 of model.safetensors ("" for the HSV floor)
    occlusion: dict = field(default_factory=dict)  # {"method": "none"|"transfer"|"paste", ...parameters}
    use_mask: bool = True
    top_k: int = 10
    mask: list[float] = field(default_factory=list)  # the occluded query's mask
    top: list[dict] = field(default_factory=list)  # [{"file", "person", "track", "score", "correct"}]
    # occlusion sweeps of the query as given, one per model (`SensitivityMap.to_dict`), when one was run
    sensitivity: list[dict] = field(default_factory=list)
    version: int = CASE_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def build_case(explorer, view: dict, image, checkpoint: str, checkpoint_hash: str, top_k: int, use_mask: bool) -> Case:
    """The case of an app view: `explorer` (a BenchmarkExplorer) embeds and ranks `image`, the view's query as
    occluded; `view` holds query_index, file, pid, camid and the occlusion parameters."""
    embedded = explorer.embed([image])
    ranked = explorer.rank(explorer.scores(embedded, use_mask)[0], view.get("pid"), view.get("camid"), int(top_k))
    return Case(
        query_index=view["query_index"],
        query_file=view["file"],
        dataset=view.get("benchmark", "pets09_occ"),
        checkpoint=Path(checkpoint).name,
        checkpoint_hash=checkpoint_hash,
        occlusion=view["occlusion"],
        use_mask=bool(use_mask),
        top_k=int(top_k),
        mask=[] if embedded.masks is None else [round(float(v), 5) for v in embedded.masks[0]],
        top=[
            {
                "file": Path(i.path).name,
                "person": i.pid,
                "track": i.camid,
                "score": round(i.score, 5),
                "correct": i.correct,
            }
            for i in ranked.items
        ],
    )


def read_case(source: str | Path | bytes) -> Case:
    try:
        text = source.decode() if isinstance(source, bytes) else Path(source).read_text()
        data = json.loads(text)
        if data.get("version") != CASE_VERSION:
            raise CaseError(f"case version {data.get('version')!r}; this build reads version {CASE_VERSION}")
        return Case(**data)
    except CaseError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, AttributeError) as error:
        raise CaseError(f"not a dpmpp case file (JSON exported by the app expected): {error}") from error
