"""The accuracy table's summaries: mean ± std over seeds, and differences paired by seed."""

from dpmpp.bench.accuracy import MASK_OFF, paired_table, summary_table


def _row(method, seed, rank1, mAP):
    return {
        "method": method,
        "seed": str(seed),
        "occ_rank1": rank1,
        "occ_mAP": mAP,
        "occ_mINP": 10.0,
        "holistic_rank1": 90.0,
        "holistic_mAP": 80.0,
        "train_seconds": 5.0,
    }


ROWS = [
    _row("CLIP-ReID two stages, no mask", 0, 60.0, 50.0),
    _row("CLIP-ReID two stages, no mask", 1, 50.0, 40.0),
    _row("DPM++ full", 0, 62.0, 51.0),
    _row("DPM++ full", 1, 53.0, 44.0),
    _row(MASK_OFF, 0, 61.0, 50.0),
]


def test_summary_is_mean_and_sample_std_in_the_canonical_order():
    lines = summary_table(list(reversed(ROWS))).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| CLIP-ReID two stages, no mask",
        "| DPM++ full",
        "| DPM++ full, test-time mask off",
    ]
    assert "| 57.5 ± 6.4 | 47.5 ± 4.9 |" in lines[3]  # (62, 53) and (51, 44)
    assert "| 61.0 | 50.0 |" in lines[4]  # one seed: no spread


def test_paired_differences_remove_the_shared_seed_effect():
    table = paired_table(ROWS)
    full = next(line for line in table.splitlines() if line.startswith("| DPM++ full |"))
    assert "| 2 | +2.5 ± 0.7 | +2.5 ± 2.1 |" in full  # rank-1 diffs (2, 3); mAP diffs (1, 4)
    off = next(line for line in table.splitlines() if line.startswith(f"| {MASK_OFF} |"))
    assert "| 1 | +1.0 | +0.0 |" in off  # only seed 0 has both rows


def test_partial_spearman_removes_a_shared_cause():
    import numpy as np

    from dpmpp.bench.masks import partial_spearman

    rng = np.random.default_rng(0)
    z = rng.normal(size=400)
    x, y = z + 0.3 * rng.normal(size=400), z + 0.3 * rng.normal(size=400)  # related only through z
    rho, p = partial_spearman(x, y, z)
    assert abs(rho) < 0.15 and p > 0.01
    y_direct = y + 2 * x
    rho, p = partial_spearman(x, y_direct, z)
    assert rho > 0.5 and p < 1e-6
