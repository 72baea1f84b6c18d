"""The accuracy table's summaries: mean ± std over seeds, differences paired by seed, occlusion events."""

import json

import numpy as np
import pytest

from dpmpp.bench import accuracy
from dpmpp.bench.accuracy import DIAGNOSTIC, MASK_OFF, TRAINED, paired_table, read_rows, summary_table


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


def test_the_table_trains_follow_up_rows_only_when_named_and_resumes(tmp_path, monkeypatch):
    trained = []

    def fake_rows(method, seed, epochs, *args, **kwargs):
        trained.append((method, seed))
        return [_row(method, seed, 50.0, 40.0) | {"epochs": epochs, "device": "test"}]

    monkeypatch.setattr(accuracy, "trained_rows", fake_rows)
    monkeypatch.setattr(accuracy, "no_learning_rows", lambda: [_row("HSV stripes (no learning)", "-", 30.0, 20.0)])
    out = tmp_path / "table.csv"
    accuracy.run(out, [0], 1)
    assert trained == [(m, 0) for m in TRAINED if m not in DIAGNOSTIC]
    assert DIAGNOSTIC <= set(TRAINED) and DIAGNOSTIC
    follow_up = sorted(DIAGNOSTIC)[0]
    trained.clear()
    accuracy.run(out, [0, 1], 1, methods=["DPM++ full", follow_up])  # seed 0 of DPM++ full is already there
    assert trained == [("DPM++ full", 1), (follow_up, 0), (follow_up, 1)]
    assert len(read_rows(out)) == 1 + len(TRAINED) - len(DIAGNOSTIC) + 3


def test_the_long_peer_row_trains_ten_times_the_epochs_and_records_them(tmp_path, monkeypatch):
    OSNET = "torchreid OSNet-x0.25 (from scratch)"
    OSNET_LONG = f"{OSNET}, 10× the epochs"
    assert accuracy.TRAINED[OSNET] is accuracy.TRAINED[OSNET_LONG] is None  # the peer's own trainer
    asked = []

    def fake_osnet(config, seed, epochs, device=None):
        asked.append(epochs)
        return (lambda paths: np.eye(len(paths), dtype=np.float32)), 1.0

    metrics = {"rank1": 0.5, "mAP": 0.4, "mINP": 0.3}
    monkeypatch.setattr(accuracy, "train_osnet", fake_osnet)
    monkeypatch.setattr(accuracy, "_evaluate_features", lambda extract: dict.fromkeys(accuracy.SPLITS, metrics))
    short = accuracy.trained_rows(OSNET, 0, 3, tmp_path, device="cpu")
    long = accuracy.trained_rows(OSNET_LONG, 0, 3, tmp_path, device="cpu")
    assert asked == [3, 30]
    assert [short[0]["epochs"], long[0]["epochs"]] == [3, 30]
    assert OSNET_LONG in DIAGNOSTIC  # the table's budget stays the same for every default row


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


def _record(camid, frame, pid=1):
    from dpmpp.data.records import ReIDRecord

    return ReIDRecord(f"q_{camid}_{frame}.jpg", pid, camid, {"frame": frame})


def test_occlusion_events_split_on_track_and_frame_gap():
    from dpmpp.bench.events import occlusion_events
    from dpmpp.data.records import ReIDRecord

    records = [_record(3, 10), _record(3, 12), _record(5, 11), _record(3, 30), _record(3, 20)]
    records.append(ReIDRecord("still.jpg", 2, 0))  # no frame number: its own event
    events = occlusion_events(records, max_gap=10)
    assert events[0] == events[1] == events[4] == events[3]  # track 3, frames 10, 12, 20, 30: gaps 2, 8, 10
    assert len(set(events[[0, 2, 5]])) == 3  # another track, or no frame number, is another event
    tighter = occlusion_events(records, max_gap=9)
    assert tighter[0] == tighter[4] != tighter[3]  # a gap of 10 frames now starts a new pass


def test_occlusion_events_of_the_bundled_benchmark():
    from dpmpp.bench.events import occlusion_events
    from dpmpp.data.datasets import load_split
    from dpmpp.paths import ASSETS

    events = occlusion_events(load_split("pets09_occ", ASSETS / "pets09_occ").query)
    sizes = np.bincount(events)
    assert len(sizes) == 27 and sizes.sum() == 213 and sizes.max() == 40


def test_paired_bootstrap_weights_queries_or_events():
    from dpmpp.bench.events import paired_bootstrap

    events = np.array([0, 0, 0, 1])  # event 0 has three queries, event 1 one
    row = np.array([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, np.nan]])  # two seeds; seed 1 skipped query 3
    reference = np.zeros((2, 4))
    point, low, high = paired_bootstrap(row, reference, events, "query", samples=2000)
    assert point == 0.75 and low == 0.0 and high == 1.0  # resamples are all-event-1 (0) or all-event-0 (1)
    point, _, _ = paired_bootstrap(row, reference, events, "event", samples=10)
    assert point == 0.5
    with pytest.raises(ValueError, match="shapes differ"):
        paired_bootstrap(row[:, :3], reference, events)


def test_event_table_pairs_seeds_and_adds_the_mask_off_row():
    import pandas as pd

    from dpmpp.bench.events import event_table

    def frame(values):
        values = np.array(values, dtype=float)
        return pd.DataFrame(
            {
                "event": [0, 0, 1, 2],
                "ap": values,
                "rank1": values,
                "ap_no_mask": values / 2,
                "rank1_no_mask": values / 2,
            }
        )

    per_query = {
        ("DPM++ full", "0"): frame([1, 1, 0, 0]),
        ("DPM++ full", "1"): frame([1, 0, 1, 0]),
        ("CLIP-ReID", "0"): frame([0, 0, 0, 0]),
    }
    lines = event_table(per_query, "DPM++ full", mask_off_of="DPM++ full").splitlines()
    assert lines[0].startswith("Paired 95 % intervals, two-level bootstrap")
    clip = next(line for line in lines if line.startswith("| CLIP-ReID |"))
    assert clip.startswith("| CLIP-ReID | 0 | -50.0 [")  # paired on seed 0 only: 0 − mean(1, 1, 0, 0)
    assert clip.count("]†") == 4  # one shared seed: events-only intervals, marked
    off = next(line for line in lines if "mask off" in line)
    assert "| 0, 1 | -25.0 [" in off and "†" not in off  # half of (0.5, 0.5) per seed
    events_only = event_table(per_query, "DPM++ full", resample="events").splitlines()
    assert events_only[0].startswith("Paired 95 % intervals, events-only bootstrap") and "†" not in events_only[-1]


def test_top_match_obeys_the_protocol_and_the_occluder_table_counts_it():
    import pandas as pd

    from dpmpp.bench.events import occluder_table
    from dpmpp.data.records import ReIDRecord, Split
    from dpmpp.eval.extract import top_match_pids

    query = [ReIDRecord("q0", 1, 5), ReIDRecord("q1", 2, 6)]
    gallery = [ReIDRecord("g0", 1, 5), ReIDRecord("g1", 3, 7), ReIDRecord("g2", 2, 8)]
    sim = np.array([[0.9, 0.5, 0.1], [0.2, 0.3, 0.4]])
    # q0's best crop is its own track (same identity and camera): excluded, so person 3 is its top match
    assert top_match_pids(Split([], query, gallery), sim).tolist() == [3, 2]

    def frame(top1, top1_off):
        return pd.DataFrame(
            {
                "occluder_pid": [3, 3, 4, -1],
                "rank1": [0.0, 1.0, 0.0, 0.0],
                "top1_pid": top1,
                "ap_no_mask": [1.0, 1.0, 1.0, 1.0],
                "rank1_no_mask": [1.0, 1.0, 1.0, 0.0],
                "top1_pid_no_mask": top1_off,
            }
        )

    per_query = {("A", "0"): frame([3, 1, 5, 3], [1, 1, 1, 3]), ("A", "1"): frame([3, 1, 4, 3], [1, 1, 1, 3])}
    lines = occluder_table(per_query, mask_off_of="A").splitlines()
    row = next(line for line in lines if line.startswith("| A |"))
    # three queries behind a person; rank-1 1/3; the occluder on top 1/3 (seed 0) and 2/3 (seed 1)
    assert row == "| A | 2 | 3 | 33.3 ± 0.0 | 50.0 ± 23.6 | 75.0 ± 35.4 |"
    off = next(line for line in lines if "mask off" in line)
    assert off == "| A, test-time mask off | 2 | 3 | 100.0 ± 0.0 | 0.0 ± 0.0 | – |"


def test_occluder_bins_split_the_queries_behind_a_person_by_fraction_hidden():
    import pandas as pd

    from dpmpp.bench.events import occluder_bins_table

    frame = pd.DataFrame(
        {
            "occluder_pid": [3, 3, 4, 4, -1],
            "occluded": [0.2, 0.25, 0.8, 1.0, 0.9],
            "rank1": [1.0, 0.0, 0.0, 0.0, 1.0],
            "top1_pid": [1, 3, 4, 2, 1],
        }
    )
    lines = occluder_bins_table({("A", "0"): frame}, "A").splitlines()
    assert "| [0.15, 0.30) | 2 | 50.0 | 50.0 |" in lines
    assert "| [0.70, 1.00] | 2 | 0.0 | 50.0 |" in lines  # fully hidden counts in the last bin
    assert "| [0.30, 0.50) | 0 | – | – |" in lines


def test_grads_records_every_step_of_the_first_epochs_per_group():
    from dpmpp.bench.grads import format_table, record
    from tests.conftest import FAST

    fast = (*FAST, "train.epochs=3")
    shared = record("DPM with the saliency head in the global norm", epochs=1, extra=fast)
    apart = record("DPM++ full", epochs=1, extra=fast)
    assert shared["apart"] == [] and apart["apart"] == ["saliency"]
    for result in (shared, apart):
        steps = result["steps"]
        assert len(steps) == result["steps_per_epoch"] > 1  # stopped after the first of three epochs
        assert {"encoder", "head", "saliency", "together"} == set(steps[0])
        assert all(s["together"] >= max(s["encoder"], s["head"]) > 0 for s in steps)
    assert all(s["together"] >= s["saliency"] for s in shared["steps"])
    table = format_table(shared)
    assert "| together |" in table and f"seed 0: {len(shared['steps'])} stage-2 steps over 1 epochs" in table


def test_transfer_report_measures_class_ignorings_premise_on_real_batches():
    from dpmpp.bench.transfer import format_report, measure

    plain, nearer = measure(epochs=1), measure(epochs=1, nearer_persons=True)
    assert plain["mixed"] > 100 and plain["mixed_with_another_identity"] > 50
    # silhouettes guide the transfer: the partner's own person stays out of what is pasted
    assert plain["partner_person_pasted_median"] < 0.25 and plain["partner_person_pasted_quarter_or_more"] < 0.1
    assert plain["negatives_with_class_ignoring"] < plain["negatives_without"]
    # cutting nearer persons out of the silhouettes makes occlusion-aware pairing favour partners hidden by one
    assert nearer["partner_hidden_by_a_person"] > plain["partner_hidden_by_a_person"]
    assert "nearer persons cut out" in format_report([plain, nearer])


def test_zeroshot_writes_a_tidy_csv_and_per_query_results_and_a_peer_beats_the_floor(tmp_path):
    import pandas as pd

    from dpmpp.bench.events import load_per_query
    from dpmpp.bench.zeroshot import COLUMNS, format_table, run

    out = tmp_path / "zeroshot.csv"
    rows = run(out, splits=2, models=["hsv", "omz-0288"], datasets=["cuhk01"], threads=1)
    frame = pd.read_csv(out)
    assert list(frame.columns) == COLUMNS and len(frame) == len(rows) == 4  # 2 models x 2 splits
    assert set(frame["split"]) == {0, 1} and (frame["num_query"] == 972).all() and (frame["num_gallery"] == 972).all()
    assert frame[["rank1", "mAP", "mINP"]].apply(lambda column: column.between(0, 100)).all().all()
    rank1 = frame.pivot(index="split", columns="model", values="rank1")
    assert (rank1["omz-0288"] > rank1["hsv"] + 30).all()  # measured: 81.7 / 82.3 against 7.4 / 9.6
    per_query = load_per_query(tmp_path / "zeroshot_per_query" / "cuhk01_split0")  # split 0 only
    assert set(per_query) == {("hsv", "0"), ("omz-0288", "0")}
    peer = per_query[("omz-0288", "0")]
    assert len(peer) == 972 and peer["query"].tolist() == list(range(972))
    assert peer["rank1"].mean() * 100 == pytest.approx(rank1.loc[0, "omz-0288"], abs=0.01)
    assert ((peer["first_true_rank"] == 1) == (peer["rank1"] == 1)).all()
    assert not (tmp_path / "zeroshot_per_query" / "cuhk01_split1").exists()
    table = format_table(rows)
    assert "| OMZ person-reid-retail-0288 | " in table and "mean ± std over 2 random splits" in table


def test_the_rows_file_is_checked_row_by_row(tmp_path):
    """The table's rows are data (bench/rows/pets09.json); a malformed row is named."""
    preset, trained, follow_up, factor = accuracy.load_rows()
    assert preset == "tiny" and trained["DPM++ full"] == [] and "DPM++ full" not in follow_up
    assert trained["DPM++ without patch transfer"] == ["aug.patch_transfer=false"]
    assert set(factor) <= follow_up <= set(trained)
    for bad, message in (
        ({"preset": "tiny", "rows": [{"name": "x"}]}, "either 'overrides' or 'trainer'"),
        ({"preset": "tiny", "rows": [{"name": "x", "trainer": "mine"}]}, "expected one of"),
        ({"rows": []}, "'preset' and 'rows'"),
    ):
        path = tmp_path / "rows.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            accuracy.load_rows(path)
