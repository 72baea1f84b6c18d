"""Command line: `python -m dpmpp build-data | train | eval | embed | bench`. The only argparse in the package."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dpmpp.paths import default_root

logger = logging.getLogger("dpmpp")


def _data_root(args) -> Path:
    root = args.root or default_root(args.data)
    if root is None:
        raise SystemExit(f"--root is required for dataset {args.data!r} (only the bundled benchmarks have a default)")
    return Path(root)


def cmd_build_data(args) -> int:
    if args.source == "cuhk01":
        from dpmpp.data.build_cuhk01 import build as build_cuhk01

        if not args.cuhk01:
            raise SystemExit("build-data cuhk01 needs --cuhk01 FOLDER (the release, with campus/NNNNMMM.png)")
        rows = build_cuhk01(args.cuhk01, args.out, args.occluders or default_root("pets09_occ") / "occluders")
        print(f"wrote 3884 images and {len(rows)} occluded camera-A copies to {args.out}")
        return 0
    from dpmpp.data.build_pets09 import build

    missing = [flag for flag in ("video", "gt", "groups") if not getattr(args, flag)]
    if missing:
        raise SystemExit(f"build-data pets09 needs {', '.join('--' + m for m in missing)}")
    rows = build(args.video, args.gt, args.groups, args.out)
    roles = {role: sum(r["role"] == role for r in rows) for role in ("train", "query", "gallery")}
    print(f"wrote {len(rows)} crops to {args.out}: {roles}")
    return 0


def _print_metrics(summary: dict, as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    print(f"** {title} **")
    print(
        f"  query: {summary['num_query']} ({summary['num_valid_query']} with a true match)  "
        f"gallery: {summary['num_gallery']}"
    )
    print(
        f"  rank-1 {100 * summary['rank1']:.1f}  rank-5 {100 * summary['rank5']:.1f}  "
        f"rank-10 {100 * summary['rank10']:.1f}  mAP {100 * summary['mAP']:.1f}  mINP {100 * summary['mINP']:.1f}"
    )


def cmd_eval(args) -> int:
    from dpmpp.data.datasets import load_split

    split = load_split(args.data, _data_root(args))
    if not args.json:
        print(split.summary())
    if args.baseline:
        from dpmpp.eval.baseline_eval import evaluate_baseline

        metrics = evaluate_baseline(args.baseline, split)
        _print_metrics(metrics.summary(), args.json, f"{args.baseline} baseline on {args.data}")
        return 0
    if not args.checkpoint:
        raise SystemExit("eval needs --checkpoint DIR or --baseline NAME")
    from dpmpp.api import Pipeline

    pipeline = Pipeline.from_checkpoint(args.checkpoint, device=args.device)
    metrics = pipeline.evaluate_split(split, use_mask=not args.no_mask, batch_size=args.batch_size)
    mode = "no mask" if args.no_mask else "masked"
    _print_metrics(metrics.summary(), args.json, f"{args.checkpoint} on {args.data} ({mode})")
    return 0


class ProgressPrinter:
    """A one-line progress bar on stderr, and a line per evaluation."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream

    def __call__(self, event) -> None:
        if event.kind == "eval":
            self.stream.write("\n")
            for split, results in event.metrics.items():
                if isinstance(results, dict):
                    for mode, m in results.items():
                        self.stream.write(
                            f"  eval epoch {event.epoch} {split} {mode}: rank-1 {100 * m['rank1']:.1f} "
                            f"mAP {100 * m['mAP']:.1f} mINP {100 * m['mINP']:.1f}\n"
                        )
            return
        width = 24
        done = int(width * event.step / max(event.steps, 1))
        losses = " ".join(f"{k} {v:.3f}" for k, v in list(event.losses.items())[:4])
        accuracy = f" acc {100 * event.accuracy:.0f}%" if event.accuracy is not None else ""
        self.stream.write(
            f"\r{event.stage} {event.epoch}/{event.epochs} [{'#' * done}{'.' * (width - done)}] "
            f"{losses}{accuracy} {event.images_per_s:.0f} img/s ETA {event.eta_s / 60:.1f} min   "
        )
        self.stream.flush()


def cmd_train(args) -> int:
    from dpmpp.config import apply_overrides, load_preset
    from dpmpp.engine.train import train

    config = load_preset(args.config)
    config.data.name = args.data
    if args.root:
        config.data.root = args.root
    if args.epochs is not None:
        config.train.epochs = args.epochs
    if args.seed is not None:
        config.train.seed = args.seed
    if args.pretrained is not None:
        config.model.pretrained = None if args.pretrained.lower() == "none" else args.pretrained
    if args.init:
        config.train.init_checkpoint = args.init
    apply_overrides(config, args.set or [])
    final = train(
        config, args.out, resume=args.resume, device=args.device, callback=None if args.quiet else ProgressPrinter()
    )
    if final:
        sys.stderr.write("\n")
        print(json.dumps(final.get("final", final)))
    return 0


def cmd_embed(args) -> int:
    import numpy as np

    from dpmpp.api import Pipeline

    pipeline = Pipeline.from_checkpoint(args.checkpoint, device=args.device)
    embedding = pipeline.embed(args.images)
    arrays = {"features": embedding.features, "paths": np.array([str(p) for p in args.images])}
    if embedding.masks is not None:
        arrays["masks"] = embedding.masks
    from dpmpp.atomic import atomic_path

    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    print(f"wrote {len(args.images)} features{' and masks' if embedding.masks is not None else ''} to {args.out}")
    return 0


def cmd_bench(args) -> int:
    if args.what == "masks":
        from dpmpp.api import Pipeline
        from dpmpp.bench.masks import analyse, format_report, save_figure
        from dpmpp.data.datasets import load_split
        from dpmpp.explorer import BenchmarkExplorer

        pipeline = Pipeline.from_checkpoint(args.checkpoint, device=args.device)
        result = analyse(BenchmarkExplorer(load_split("pets09_occ", default_root("pets09_occ")), pipeline))
        out = Path(args.out or "bench/results")
        out.mkdir(parents=True, exist_ok=True)
        save_figure(result, out / "masks.png")
        result["table"].to_csv(out / "masks_per_query.csv", index=False)
        print(format_report(result))
        print(f"figure: {out / 'masks.png'}")
        return 0
    if args.what == "accuracy":
        from dpmpp.bench.accuracy import DIAGNOSTIC, MASK_OFF, TRAINED, paired_table, run, summary_table

        epochs = args.epochs if args.epochs is not None else (1 if args.quick else 15)
        seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
        methods = args.methods or (["DPM++ full"] if args.quick else [m for m in TRAINED if m not in DIAGNOSTIC])
        unknown = [m for m in methods if m not in TRAINED]
        if unknown:
            raise SystemExit(f"unknown --methods {unknown}; expected some of {list(TRAINED)}")
        out = Path(args.out or ("bench/results/accuracy_quick.csv" if args.quick else "bench/results/accuracy.csv"))
        rows = run(out, seeds, epochs, methods, args.jobs, args.device)
        print(f"results: {out}")
        print(summary_table(rows))
        print()
        print(paired_table(rows))
        print()
        print(paired_table([r for r in rows if r["method"] in ("DPM++ full", MASK_OFF)], MASK_OFF))
        return 0
    if args.what == "grads":
        from dpmpp.bench.grads import DEFAULT_ROW, format_table, record

        methods = args.methods or [DEFAULT_ROW]
        epochs = args.epochs if args.epochs is not None else (1 if args.quick else 3)
        for method in methods:
            for seed in args.seeds or [0]:
                try:
                    print(format_table(record(method, epochs, seed, args.device)))
                except ValueError as error:
                    raise SystemExit(str(error)) from None
        return 0
    if args.what == "transfer":
        from dpmpp.bench.transfer import format_report, measure

        epochs = args.epochs if args.epochs is not None else (1 if args.quick else 3)
        results = [measure(epochs, nearer) for nearer in (False, True)]
        print(f"patch transfer on pets09_occ training batches, {epochs} epochs, tiny preset")
        print(json.dumps(results) if args.json else format_report(results))
        return 0
    if args.what == "zeroshot":
        from dpmpp.bench.zeroshot import NUM_SPLITS, format_table, run

        out = Path(args.out or "bench/results/zeroshot.csv")
        rows = run(out, NUM_SPLITS if args.splits is None else args.splits)
        print(f"results: {out}")
        print(format_table(rows))
        return 0
    if args.what == "proximity":
        from dpmpp.bench.proximity import DEFAULT_PEERS, format_gains, format_table, run
        from dpmpp.paths import DEFAULT_CHECKPOINT

        checkpoints, peers = getattr(args, "checkpoints", None) or [], args.peer or []
        if not checkpoints and not peers:
            checkpoints, peers = [DEFAULT_CHECKPOINT], list(DEFAULT_PEERS)
        summary, per_query, gains = run(checkpoints, peers, args.device, args.out)
        if args.out:
            print(f"results: {args.out}")
        print(format_table(summary, per_query))
        if len(gains):
            print()
            print(format_gains(gains))
        return 0
    if args.what == "grid":
        from dpmpp.bench import grid as grids

        if not args.grid:
            raise SystemExit("bench grid needs --grid FILE (e.g. bench/grids/cuhk01.json)")
        grid = grids.Grid.load(args.grid)
        out = Path(args.out or "bench/results")
        if not args.summary_only:
            grids.run(grid, args.seeds or [0, 1, 2], out, args.jobs, args.methods)
        data = grids.load_results(grid, out)
        print(grids.summary_table(data, grid.evaluate))
        for dataset in grid.evaluate:
            print()
            print(grids.paired_table(data, grid.reference, dataset))
        return 0
    if args.what == "events":
        from dpmpp.bench.accuracy import fill_per_query
        from dpmpp.bench.events import event_table, load_per_query, occluder_bins_table, occluder_table

        out = Path(args.out or "bench/results/accuracy.csv")
        per_query = load_per_query(fill_per_query(out, args.device))
        if not per_query:
            raise SystemExit(f"no per-query results for {out}: run `python -m dpmpp bench accuracy --out {out}` first")
        reference = args.reference or "DPM++ full"
        print(f"per-query results: {len(per_query)} (row, seed) pairs")
        print(event_table(per_query, reference, mask_off_of="DPM++ full"))
        print()
        print("Queries hidden behind another person: does the top match find the person, or the occluder?")
        print(occluder_table(per_query, mask_off_of="DPM++ full"))
        print()
        print(occluder_bins_table(per_query, reference))
        return 0
    from dpmpp.atomic import write_json
    from dpmpp.bench.speed import format_tables, run
    from dpmpp.engine.distributed import pick_device

    results = run(args.quick, pick_device(args.device))
    if args.out:
        write_json(args.out, results)
    print(json.dumps(results) if args.json else format_tables(results))
    return 0


class _Repeatable(argparse.Action):
    """A plain option (the last value wins) that also keeps every value given, in order, under `<dest>s`."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}s", [*(getattr(namespace, f"{self.dest}s", None) or []), values])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dpmpp", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build-data", help="build a benchmark from raw data")
    build.add_argument("source", choices=["pets09", "cuhk01"], help="which raw source")
    build.add_argument("--video", help="pets09: PETS09-S2L1 vtest.avi")
    build.add_argument("--gt", help="pets09: MOTChallenge gt.txt")
    build.add_argument("--groups", help="pets09: track -> person grouping CSV")
    build.add_argument("--cuhk01", help="cuhk01: the release folder (campus/NNNNMMM.png)")
    build.add_argument("--occluders", help="cuhk01: occluder bank folder (default: the bundled PETS09 bank)")
    build.add_argument("--out", required=True, help="output folder")
    build.set_defaults(func=cmd_build_data)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint or a no-learning baseline")
    evaluate.add_argument("--data", default="pets09_occ", help="registered dataset name")
    evaluate.add_argument("--root", default=None, help="dataset folder (default: the bundled one, if any)")
    evaluate.add_argument("--checkpoint", default=None, help="checkpoint folder")
    evaluate.add_argument("--baseline", choices=["hsv"], default=None, help="evaluate a no-learning baseline")
    evaluate.add_argument("--no-mask", action="store_true", help="plain cosine instead of the masked metric")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(func=cmd_eval)

    train = commands.add_parser("train", help="train DPM++ (both stages) and write a checkpoint folder")
    train.add_argument("--config", default="tiny", help="preset name (tiny, vit_b16) or a JSON file")
    train.add_argument("--data", default="pets09_occ", help="registered dataset name")
    train.add_argument("--root", default=None, help="dataset folder (default: the bundled one, if any)")
    train.add_argument("--epochs", type=int, default=None, help="stage-2 epochs")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--pretrained", default=None, help="CLIP weights file or open_clip tag; 'none' = random init")
    train.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. aug.patch_transfer=false"
    )
    train.add_argument("--init", default=None, help="start from this checkpoint's weights (other identities are fine)")
    train.add_argument("--out", required=True, help="checkpoint folder to write")
    train.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    train.add_argument("--device", default=None)
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    embed = commands.add_parser("embed", help="write features and masks of images to an .npz file")
    embed.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the bundled model)")
    embed.add_argument("images", nargs="+", help="image files")
    embed.add_argument("--out", required=True, help="output .npz")
    embed.add_argument("--device", default=None)
    embed.set_defaults(func=cmd_embed)

    bench = commands.add_parser("bench", help="benchmarks that print tables")
    bench.add_argument(
        "what",
        choices=["speed", "accuracy", "masks", "events", "grads", "transfer", "proximity", "zeroshot", "grid"],
        help="which benchmark",
    )
    bench.add_argument(
        "--checkpoint",
        default=None,
        action=_Repeatable,
        help="masks: the checkpoint to analyse (default: bundled); proximity: a checkpoint to score (repeatable)",
    )
    bench.add_argument("--seeds", type=int, nargs="+", default=None, help="accuracy, grads: seeds of each trained row")
    bench.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="accuracy: stage-2 epochs of every trained row; grads, transfer: epochs recorded",
    )
    bench.add_argument("--jobs", type=int, default=1, help="accuracy: rows trained at once (processes)")
    bench.add_argument("--methods", nargs="+", default=None, help="accuracy, grads: only these trained rows (by name)")
    bench.add_argument("--quick", action="store_true", help="small sizes only (a couple of minutes on a CPU)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "--out",
        default=None,
        help="speed: also write JSON here; accuracy: the CSV to fill; events: the CSV to read; "
        "zeroshot: the CSV to write",
    )
    bench.add_argument(
        "--peer",
        action="append",
        default=None,
        help="proximity: a pretrained peer to score (repeatable); with neither --checkpoint nor --peer, the bundled "
        "checkpoint, omz-0277 and osnet-x0.25-msmt17; --out: the CSV to write",
    )
    bench.add_argument("--reference", default=None, help="events: the row others are compared with (DPM++ full)")
    bench.add_argument("--grid", default=None, help="grid: the grid file (bench/grids/*.json)")
    bench.add_argument("--summary-only", action="store_true", help="grid: print the tables of the runs so far")
    bench.add_argument("--splits", type=int, default=None, help="zeroshot: the first N random CUHK01 splits (10)")
    bench.add_argument("--device", default=None)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return args.func(args)
