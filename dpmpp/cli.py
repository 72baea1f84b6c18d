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
    from dpmpp.data.build_pets09 import build

    rows = build(args.video, args.gt, args.groups, args.out)
    roles = {role: sum(r["role"] == role for r in rows) for role in ("train", "query", "gallery")}
    print(f"wrote {len(rows)} crops to {args.out}: {roles}")
    return 0


def _print_metrics(summary: dict, as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    print(f"** {title} **")
    print(f"  query: {summary['num_query']} ({summary['num_valid_query']} with a true match)  gallery: {summary['num_gallery']}")
    print(f"  rank-1 {100 * summary['rank1']:.1f}  rank-5 {100 * summary['rank5']:.1f}  "
          f"rank-10 {100 * summary['rank10']:.1f}  mAP {100 * summary['mAP']:.1f}  mINP {100 * summary['mINP']:.1f}")


def cmd_eval(args) -> int:
    from dpmpp.data.datasets import load_split

    split = load_split(args.data, _data_root(args))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dpmpp", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build-data", help="build a benchmark from raw data")
    build.add_argument("source", choices=["pets09"], help="which raw source")
    build.add_argument("--video", required=True, help="PETS09-S2L1 vtest.avi")
    build.add_argument("--gt", required=True, help="MOTChallenge gt.txt")
    build.add_argument("--groups", required=True, help="track -> person grouping CSV")
    build.add_argument("--out", required=True, help="output folder (crops/ and manifest.csv)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)
