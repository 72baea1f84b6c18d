"""`bench load` against a launched app: two students, one round, no training."""

import math

from dpmpp.bench.load import STEPS, format_table, run_load


def test_every_step_of_a_small_class_answers_without_errors():
    result = run_load(students=2, rounds=1, with_training=False, think_s=0.5, poll_s=0.5, poll_always=True)
    rows = {row["step"]: row for row in result.rows()}
    assert list(rows) == list(STEPS)
    for step, row in rows.items():
        assert row["errors"] == 0, f"{step}: {result.errors[step][:3]}"
        assert row["calls"] >= 2, step  # each student's one call (the status: polled at least once each)
        assert all(math.isfinite(row[key]) and row[key] > 0 for key in ("p50_ms", "p95_ms", "max_ms")), row
    assert max(sample["server_mb"] for sample in result.memory) > 100  # the server process was sampled
    table = format_table(result)
    for step in STEPS:
        assert f"| {step} | {rows[step]['calls']} | 0 |" in table
