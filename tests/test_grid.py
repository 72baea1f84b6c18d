"""`bench grid`: rows as data, every (row, seed) scored per query on every benchmark, paired seed-aware tables."""

import json

import numpy as np
import pandas as pd
import pytest

from dpmpp.bench import grid as grids
from tests.conftest import FAST


@pytest.fixture
def tiny_grid(small_data, tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(
        json.dumps(
            {
                "preset": "tiny",
                "train_data": "manifest",
                "evaluate": ["manifest"],
                "reference": "full",
                "rows": {"full": FAST, "no mask": [*FAST, "model.use_mask=false"]},
                "peers": ["omz-0288"],
                "epochs": 1,
                "roots": {"manifest": str(small_data)},
            }
        )
    )
    return grids.Grid.load(path)


def test_a_grid_trains_each_row_and_seed_once_and_pairs_them(tiny_grid, tmp_path):
    out = tmp_path / "results"
    grids.run(tiny_grid, [0, 1], out)
    files = sorted(p.name for p in (out / "tiny_per_query" / "manifest").glob("*.csv"))
    assert files == ["full_seed0.csv", "full_seed1.csv", "no_mask_seed0.csv", "no_mask_seed1.csv", "omz_0288_seed-.csv"]
    stamps = {p: p.stat().st_mtime_ns for p in (out / "tiny_per_query").rglob("*.csv")}
    grids.run(tiny_grid, [0, 1], out)  # a rerun trains nothing
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "tiny_per_query").rglob("*.csv")}

    data = grids.load_results(tiny_grid, out)
    assert set(data["row"]) == {"full", "no mask", "full, test-time mask off", "OMZ person-reid-retail-0288"}
    summary = grids.summary_table(data, ["manifest"])
    full = data[(data["row"] == "full")].groupby("seed")["rank1"].mean() * 100
    assert f"{full.mean():.1f} ± {full.std(ddof=1):.1f}" in summary
    table = grids.paired_table(data, "full", "manifest", samples=200)
    assert "| no mask | 2 |" in table and "| OMZ person-reid-retail-0288 | 2 |" in table


def test_paired_differences_are_per_seed_means_of_query_differences():
    rows = []
    for row, offset in (("ref", 0.0), ("other", 0.25)):
        for seed in ("0", "1"):
            for i in range(8):
                rows.append(
                    {
                        "row": row,
                        "seed": seed,
                        "dataset": "d",
                        "file": f"{i}.jpg",
                        "event": i // 2,
                        "rank1": float((i + int(seed)) % 2 == 0 or offset > 0 and i < 2),
                        "ap": 0.5 + offset / 2,
                    }
                )
    data = pd.DataFrame(rows)
    table = grids.paired_table(data, "ref", "d", samples=200)
    ap_diff = 100 * 0.125
    assert f"+{ap_diff:.1f} [+{ap_diff:.1f}, +{ap_diff:.1f}]" in table  # constant difference: a zero-width interval
    ref = data[data["row"] == "ref"].groupby("seed")["rank1"].mean()
    other = data[data["row"] == "other"].groupby("seed")["rank1"].mean()
    assert f"{100 * np.mean(other - ref):+.1f} [" in table


def test_a_grid_file_with_an_unknown_field_or_reference_is_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"preset": "tiny", "train_data": "x", "evaluate": [], "reference": "a", "rows": {}}))
    with pytest.raises(ValueError, match="reference"):
        grids.Grid.load(path)
    path.write_text(
        json.dumps(
            {"preset": "tiny", "train_data": "x", "evaluate": [], "reference": "a", "rows": {"a": []}, "epoch": 3}
        )
    )
    with pytest.raises(ValueError, match="epoch"):
        grids.Grid.load(path)


def test_a_running_grid_summarises_the_benchmarks_it_has_and_names_the_others():
    rows = [{"row": "peer", "seed": "-", "dataset": "d", "file": "0.jpg", "event": 0, "rank1": 1.0, "ap": 1.0}]
    assert grids.paired_table(pd.DataFrame(rows), "ref", "d", samples=50) == "d: no result of ref yet"


def test_the_headroom_table_counts_the_peers_misses_and_what_each_seed_fixes_and_breaks():
    #            query:  0    1    2    3    4    5 (no true match)
    peer = [1.0, 0.0, 0.0, 0.0, 1.0, float("nan")]
    seeds = {"0": [1.0, 1.0, 0.0, 0.0, 0.0, float("nan")], "1": [1.0, 1.0, 1.0, 0.0, 1.0, float("nan")]}
    rows = [("peer", "-", peer)] + [("ref", seed, hits) for seed, hits in seeds.items()]
    data = pd.DataFrame(
        {"row": row, "seed": seed, "dataset": "d", "file": f"{i}.jpg", "event": i, "rank1": hit, "ap": hit}
        for row, seed, hits in rows
        for i, hit in enumerate(hits)
    )
    table = grids.headroom_table(data, "ref", ["d", "absent"])
    # 5 scored queries; the peer misses 1, 2, 3; every seed misses 3; seed 0 fixes 1 and breaks 4, seed 1 fixes 1, 2
    assert "| d | peer | 5 | 3 | 1 | 1.5 | 0.5 |" in table
    assert "absent" not in table
