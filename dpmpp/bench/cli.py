"""`python -m dpmpp bench <name>`: one subcommand per benchmark, each with only its own options.

Every benchmark prints tables; none is a test. What each measures, and the committed results, are in
bench/README.md and docs/results.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dpmpp.cli import UsageError, _activity, _counting, _pipeline
from dpmpp.paths import default_root

RESULTS = Path("bench/results")


class _Repeatable(argparse.Action):
    """A plain option (the last value wins) that also keeps every value given, in order, under `<dest>s`."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}s", [*(getattr(namespace, f"{self.dest}s", None) or []), values])


def speed(args) -> int:
    from dpmpp.atomic import write_json
    from dpmpp.bench.speed import format_tables, run
    from dpmpp.engine.distributed import pick_device

    with _activity(args, "bench speed"):
        results = run(args.quick, pick_device(args.device))
    if args.out:
        write_json(args.out, results)
    print(json.dumps(results) if args.json else format_tables(results))
    return 0


def accuracy(args) -> int:
    from dpmpp.bench.accuracy import DIAGNOSTIC, MASK_OFF, TRAINED, paired_table, run, summary_table

    epochs = args.epochs if args.epochs is not None else (1 if args.quick else 15)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    methods = args.methods or (["DPM++ full"] if args.quick else [m for m in TRAINED if m not in DIAGNOSTIC])
    unknown = [m for m in methods if m not in TRAINED]
    if unknown:
        raise UsageError(f"unknown --methods {unknown}; expected some of {list(TRAINED)}")
    out = Path(args.out or RESULTS / ("accuracy_quick.csv" if args.quick else "accuracy.csv"))
    with _activity(args, "bench accuracy"):
        rows = run(out, seeds, epochs, methods, args.jobs, args.device)
    print(f"results: {out}")
    for table in (
        summary_table(rows),
        paired_table(rows),
        paired_table([r for r in rows if r["method"] in ("DPM++ full", MASK_OFF)], MASK_OFF),
    ):
        print(table, end="\n\n")
    return 0


def events(args) -> int:
    from dpmpp.bench.accuracy import fill_per_query
    from dpmpp.bench.events import event_table, load_per_query, occluder_bins_table, occluder_table

    out = Path(args.out)
    with _activity(args, "bench events"):
        per_query = load_per_query(fill_per_query(out, args.device))
    if not per_query:
        raise UsageError(f"no per-query results for {out}: run `python -m dpmpp bench accuracy --out {out}` first")
    print(f"per-query results: {len(per_query)} (row, seed) pairs")
    print(event_table(per_query, args.reference, mask_off_of="DPM++ full"))
    print()
    print("Queries hidden behind another person: does the top match find the person, or the occluder?")
    print(occluder_table(per_query, mask_off_of="DPM++ full"))
    print()
    print(occluder_bins_table(per_query, args.reference))
    return 0


def masks(args) -> int:
    from dpmpp.bench.masks import analyse, format_dependence, format_report, image_dependence, save_figure
    from dpmpp.data.datasets import load_split
    from dpmpp.explorer import BenchmarkExplorer

    pipeline = _pipeline(args.checkpoint, args.device)
    if not pipeline.has_mask:
        raise UsageError(f"bench masks needs a checkpoint with a mask generator; {pipeline.folder} has none")
    if args.pairs < 2:
        raise UsageError(f"--pairs must be at least 2, got {args.pairs}")
    with _counting(pipeline, args, "bench masks", None):
        result = analyse(BenchmarkExplorer(load_split("pets09_occ", default_root("pets09_occ")), pipeline))
        clean = load_split("cuhk01", default_root("cuhk01")).query[: args.pairs]
        occluded = load_split("cuhk01_occ", default_root("cuhk01_occ")).query[: args.pairs]
        dependence = image_dependence(pipeline, clean, occluded)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_figure(result, out / "masks.png")
    result["table"].to_csv(out / "masks_per_query.csv", index=False)
    print(format_report(result))
    print(f"figure: {out / 'masks.png'}")
    print()
    print("cuhk01_occ: do the masks depend on the image?")
    print(format_dependence(dependence))
    return 0


def grads(args) -> int:
    from dpmpp.bench.grads import DEFAULT_ROW, format_table, record

    epochs = args.epochs if args.epochs is not None else (1 if args.quick else 3)
    for method in args.methods or [DEFAULT_ROW]:
        for seed in args.seeds:
            try:
                with _activity(args, f"bench grads {method}, seed {seed}"):
                    steps = record(method, epochs, seed, args.device)
            except ValueError as error:
                raise UsageError(str(error)) from None
            print(format_table(steps))
    return 0


def transfer(args) -> int:
    from dpmpp.bench.transfer import format_report, measure

    epochs = args.epochs if args.epochs is not None else (1 if args.quick else 3)
    with _activity(args, "bench transfer"):
        results = [measure(epochs, nearer) for nearer in (False, True)]
    print(f"patch transfer on pets09_occ training batches, {epochs} epochs, tiny preset")
    print(json.dumps(results) if args.json else format_report(results))
    return 0


def proximity(args) -> int:
    from dpmpp.bench.proximity import DEFAULT_PEERS, format_gains, format_table, run
    from dpmpp.model.peers import PEERS
    from dpmpp.paths import DEFAULT_CHECKPOINT

    checkpoints, peers = getattr(args, "checkpoints", None) or [], args.peer or []
    if not checkpoints and not peers:
        checkpoints, peers = [DEFAULT_CHECKPOINT], list(DEFAULT_PEERS)
    unknown = [peer for peer in peers if peer not in PEERS]
    if unknown:
        raise UsageError(f"unknown --peer {', '.join(unknown)}; known: {', '.join(PEERS)}")
    with _activity(args, "bench proximity"):
        summary, per_query, gains = run(checkpoints, peers, args.device, args.out)
    if args.out:
        print(f"results: {args.out}")
    print(format_table(summary, per_query))
    if len(gains):
        print()
        print(format_gains(gains))
    return 0


def zeroshot(args) -> int:
    from dpmpp.bench.zeroshot import NUM_SPLITS, format_table, run

    out = Path(args.out)
    with _activity(args, "bench zeroshot"):
        rows = run(out, NUM_SPLITS if args.splits is None else args.splits)
    print(f"results: {out}")
    print(format_table(rows))
    return 0


def grid(args) -> int:
    from dpmpp.bench import grid as grids

    spec = grids.Grid.load(args.grid)
    out = Path(args.out)
    with _activity(args, f"bench grid {spec.name}"):
        if not args.summary_only:
            grids.run(spec, args.seeds, out, args.jobs, args.methods)
        data = grids.load_results(spec, out)
    print(grids.summary_table(data, spec.evaluate))
    for dataset in spec.evaluate:
        print()
        print(grids.paired_table(data, spec.reference, dataset))
    print()
    print(grids.headroom_table(data, spec.reference, spec.evaluate))
    return 0


def load(args) -> int:
    from dpmpp.bench.load import main

    return main(args)


def app_timing(args) -> int:
    from dpmpp.bench.app_timing import main

    return main(args)


def add_bench_parser(commands) -> None:
    """`bench` and its subcommands, on the top-level parser's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    common.add_argument("--quiet", action="store_true", help="no progress line")
    bench = commands.add_parser("bench", help="benchmarks that print tables")
    which = bench.add_subparsers(dest="what", required=True, metavar="BENCHMARK")

    def add(name: str, handler, help: str) -> argparse.ArgumentParser:
        parser = which.add_parser(name, help=help, description=help, parents=[common])
        parser.set_defaults(func=handler)
        return parser

    def quick(parser, what: str) -> None:
        parser.add_argument("--quick", action="store_true", help=what)

    def trained_rows(parser, default_seeds) -> None:
        parser.add_argument("--seeds", type=int, nargs="+", default=default_seeds, help="seeds of each trained row")
        parser.add_argument("--methods", nargs="+", default=None, help="only these trained rows (by name)")

    p = add("speed", speed, "throughput and latency of embedding, search and training steps")
    quick(p, "small sizes only (a couple of minutes on a CPU)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, help="also write the JSON here")

    p = add("accuracy", accuracy, "the pets09_occ accuracy table (rows: bench/rows/pets09.json); resumes")
    quick(p, "1 epoch, seed 0, DPM++ full only: checks the harness")
    trained_rows(p, None)
    p.add_argument("--epochs", type=int, default=None, help="stage-2 epochs of every trained row (15)")
    p.add_argument("--jobs", type=int, default=1, help="rows trained at once (processes)")
    p.add_argument("--out", default=None, help="the CSV to fill (bench/results/accuracy.csv)")

    p = add("events", events, "paired intervals over occlusion events, from an accuracy table's per-query files")
    p.add_argument("--out", default=str(RESULTS / "accuracy.csv"), help="the accuracy CSV whose results to read")
    p.add_argument("--reference", default="DPM++ full", help="the row the others are compared with")

    p = add("masks", masks, "what the bundled model's masks select, query by query")
    p.add_argument("--checkpoint", default=None, help="the checkpoint to analyse (default: bundled)")
    p.add_argument("--out", default=str(RESULTS), help="folder for masks.png and masks_per_query.csv")
    p.add_argument("--pairs", type=int, default=120, help="cuhk01 queries compared with their occluded copies (120)")

    p = add("grads", grads, "gradient norms of each parameter group through training")
    quick(p, "one epoch")
    trained_rows(p, [0])
    p.add_argument("--epochs", type=int, default=None, help="epochs recorded (3)")

    p = add("transfer", transfer, "what patch transfer does to pets09_occ training batches")
    quick(p, "one epoch")
    p.add_argument("--epochs", type=int, default=None, help="epochs recorded (3)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = add("proximity", proximity, "results by distance from the nearest training crop (pets09)")
    p.add_argument("--checkpoint", action=_Repeatable, default=None, help="a checkpoint to score (repeatable)")
    p.add_argument(
        "--peer",
        action="append",
        default=None,
        help="a pretrained peer to score (repeatable); with neither --checkpoint nor --peer: the bundled "
        "checkpoint, omz-0277 and osnet-x0.25-msmt17",
    )
    p.add_argument("--out", default=None, help="the CSV to write")

    p = add("zeroshot", zeroshot, "the pretrained peers, zero-shot, on every benchmark")
    p.add_argument("--splits", type=int, default=None, help="the first N random CUHK01 splits (10)")
    p.add_argument("--out", default=str(RESULTS / "zeroshot.csv"), help="the CSV to write")

    p = add("grid", grid, "an ablation grid: rows x seeds trained and scored on several benchmarks; resumes")
    p.add_argument("--grid", required=True, help="the grid file (bench/grids/*.json)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of each row")
    p.add_argument("--methods", nargs="+", default=None, help="only these rows (by name)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once (processes)")
    p.add_argument("--out", default=str(RESULTS), help="folder of the per-query results and checkpoints")
    p.add_argument("--summary-only", action="store_true", help="print the tables of the runs so far")

    from dpmpp.bench.load import add_arguments as load_arguments

    p = add("load", load, "a class on one server: N students on a launched app, latency per step, RSS, disk")
    load_arguments(p)

    from dpmpp.bench.app_timing import add_arguments as app_arguments

    p = add("app", app_timing, "response times of the app's interactive steps for one visitor, on both benchmarks")
    app_arguments(p)
