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
    version: int = CASE_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


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
