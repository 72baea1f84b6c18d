"""Command line: `python -m dpmpp build-data | train | eval | embed | bench`. With dpmpp/bench/cli.py (the `bench`
subcommands), the only argparse in the package.

An expected error (a bad config value, a missing file or weights, a dataset folder in another layout, a checkpoint
that does not load, an unreadable image) prints one line, `error: ...`, on stderr and exits with status 2;
`--debug` shows its traceback instead. Any other exception is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, TextIO

from dpmpp.paths import default_root

logger = logging.getLogger("dpmpp")
EXIT_USER_ERROR = 2


class UsageError(Exception):
    """A command was given too little or something it cannot use; the message says what it needs."""


# Errors a user causes and can fix, each with a message saying what was expected, as (module, class name). They
# are looked up among the modules already imported only: an error of a class can only come from a loaded module,
# and the command line stays quick to start.
EXPECTED_ERRORS = (
    ("dpmpp.config", "ConfigError"),
    ("dpmpp.model.backbone", "PretrainedWeightsMissing"),
    ("dpmpp.data.datasets", "DatasetLayoutError"),
    ("dpmpp.data.datasets", "UnknownDatasetError"),
    ("dpmpp.engine.checkpoint", "CheckpointError"),
    ("dpmpp.model.peers", "PeerUnavailable"),
    ("dpmpp.data.images", "ImageLoadError"),
    ("dpmpp.engine.loop", "NonFiniteLossError"),
)


def is_expected(error: BaseException) -> bool:
    """Whether `error` is a user's mistake (one line, exit status 2) rather than a bug (a traceback)."""
    if isinstance(error, (UsageError, FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return True
    for module, name in EXPECTED_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(error, cls):
            return True
    return False


def error_line(error: BaseException) -> str:
    """The error's message on one line."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    elif isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        text = error.args[0]  # KeyError's str() quotes its message
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


# ----- progress on stderr --------------------------------------------------------------------------------------
def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class StatusLine:
    """One line of progress on a stream (stderr): redrawn in place on a terminal; elsewhere (a pipe, a log file)
    written as whole lines, at most one every `every` seconds unless forced."""

    current: StatusLine | None = None  # the line a log record must not be written into

    def __init__(self, stream: TextIO | None = None, every: float = 30.0) -> None:
        self.stream = stream or sys.stderr
        self.terminal = _is_terminal(self.stream)
        self.every, self.last = every, time.monotonic()
        self.lines = 0  # whole lines written (not on a terminal)
        self.drawn = 0  # length of the line drawn in place, 0 when none is open (on a terminal)
        self.lock = threading.Lock()

    def show(self, text: str, force: bool = False) -> None:
        with self.lock:
            if self.terminal:
                self.stream.write("\r" + text.ljust(self.drawn))
                self.drawn = max(len(text), 1)
                StatusLine.current = self
            elif force or time.monotonic() - self.last >= self.every:
                self.stream.write(text + "\n")
                self.lines, self.last = self.lines + 1, time.monotonic()
            else:
                return
            self.stream.flush()

    def close(self) -> None:
        """End a line drawn in place, so that what is written next starts on a line of its own."""
        with self.lock:
            if self.drawn:
                self.stream.write("\n")
                self.stream.flush()
                self.drawn = 0
            if StatusLine.current is self:
                StatusLine.current = None


class _LineAwareHandler(logging.StreamHandler):
    """Log records start on a line of their own, below a progress line drawn in place."""

    def emit(self, record: logging.LogRecord) -> None:
        line = StatusLine.current
        if line is not None and line.stream is self.stream:
            line.close()
        super().emit(record)


def bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * done / max(total, 1))
    return f"[{'#' * filled}{'.' * (width - filled)}]"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class Counter:
    """Progress through `total` items (None: unknown) on a StatusLine: `label [####....] n/total unit, ETA`."""

    def __init__(self, label: str, total: int | None, unit: str = "images", stream: TextIO | None = None) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.done, self.started = 0, time.monotonic()
        self.line = StatusLine(stream)

    def advance(self, count: int) -> None:
        self.done += count
        elapsed = time.monotonic() - self.started
        if self.total is None or self.done > self.total:
            self.line.show(f"{self.label}: {self.done} {self.unit} in {_duration(elapsed)}")
            return
        eta = elapsed / self.done * (self.total - self.done)
        finished = self.done >= self.total
        self.line.show(
            f"{self.label} {bar(self.done, self.total)} {self.done}/{self.total} {self.unit}, ETA {_duration(eta)}",
            force=finished and self.line.lines > 0,  # elsewhere than a terminal, a long run also says it ended
        )

    def __enter__(self) -> Counter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.line.close()


class Activity:
    """For a command that cannot count its work: how long it has run, on a StatusLine redrawn every second by a
    thread (on a terminal; elsewhere a line every 30 s)."""

    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 1.0) -> None:
        self.label, self.interval = label, interval
        self.line = StatusLine(stream)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="dpmpp-activity", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self.stopped.wait(self.interval):
            self.line.show(f"{self.label}: running for {_duration(time.monotonic() - started)}")

    def __enter__(self) -> Activity:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join()
        self.line.close()


def _activity(args, label: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if args.quiet else Activity(label)


class _BuiltForCheckpoint(logging.Filter):
    """open_clip warns that a model it builds without weights is "initialized randomly"; building it for a
    checkpoint, whose weights replace those at once, that would mislead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


def _pipeline(checkpoint: str | None, device: str | None):
    """The Pipeline of `checkpoint`, able to report its embedding's progress (see `_counting`)."""
    root, built_for_checkpoint = logging.getLogger(), _BuiltForCheckpoint()
    root.addFilter(built_for_checkpoint)
    try:
        return _reporting_pipeline_type().from_checkpoint(checkpoint, device=device)
    finally:
        root.removeFilter(built_for_checkpoint)


@contextlib.contextmanager
def _counting(pipeline, args, label: str, total: int | None) -> Iterator[None]:
    """While inside, `pipeline` counts the images it embeds on a progress bar (unless --quiet)."""
    if args.quiet:
        yield
        return
    with Counter(label, total) as counter:
        pipeline.progress = counter
        try:
            yield
        finally:
            pipeline.progress = None


@functools.cache
def _reporting_pipeline_type() -> type:
    import numpy as np

    from dpmpp.api import Embedding, Pipeline

    class ReportingPipeline(Pipeline):
        """With a `progress` Counter, embeds batch by batch (the batches Pipeline.embed makes, so the features are
        the same) and counts them; without one, a plain Pipeline."""

        progress: Counter | None = None

        def embed(self, images, camids=None, batch_size: int = 128) -> Embedding:
            if self.progress is None or len(images) == 0:
                return super().embed(images, camids, batch_size)
            parts = []
            for start in range(0, len(images), batch_size):
                chunk = slice(start, start + batch_size)
                parts.append(super().embed(images[chunk], None if camids is None else camids[chunk], batch_size))
                self.progress.advance(len(parts[-1].features))
            masks = [part.masks for part in parts]
            return Embedding(
                np.concatenate([part.features for part in parts]),
                None if masks[0] is None else np.concatenate(masks),
            )

    return ReportingPipeline


# ----- commands ------------------------------------------------------------------------------------------------
def _data_root(name: str, root: str | None) -> Path:
    """The folder of dataset `name`: `root`, else its bundled folder."""
    root = root or default_root(name)
    if root is None:
        from dpmpp.data.datasets import UnknownDatasetError, dataset_names

        names = dataset_names()
        if name not in names:
            raise UnknownDatasetError(f"unknown dataset {name!r}; registered: {', '.join(names)}")
        raise UsageError(f"--root is required for dataset {name!r} (only the bundled benchmarks have a default)")
    return Path(root)


def cmd_build_data(args) -> int:
    if args.source == "cuhk01":
        from dpmpp.data.build_cuhk01 import build as build_cuhk01

        if not args.cuhk01:
            raise UsageError("build-data cuhk01 needs --cuhk01 FOLDER (the release, with campus/NNNNMMM.png)")
        with _activity(args, "build-data cuhk01"):
            rows = build_cuhk01(args.cuhk01, args.out, args.occluders or default_root("pets09_occ") / "occluders")
        print(f"wrote 3884 images and {len(rows)} occluded camera-A copies to {args.out}")
        return 0
    from dpmpp.data.build_pets09 import build

    missing = [flag for flag in ("video", "gt", "groups") if not getattr(args, flag)]
    if missing:
        raise UsageError(f"build-data pets09 needs {', '.join('--' + m for m in missing)}")
    with _activity(args, "build-data pets09"):
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

    split = load_split(args.data, _data_root(args.data, args.root))
    if not args.json:
        print(split.summary())
    if args.baseline:
        from dpmpp.eval.baseline_eval import evaluate_baseline

        with _activity(args, f"eval {args.baseline}"):
            metrics = evaluate_baseline(args.baseline, split)
        _print_metrics(metrics.summary(), args.json, f"{args.baseline} baseline on {args.data}")
        return 0
    if not args.checkpoint:
        raise UsageError("eval needs --checkpoint DIR or --baseline NAME")
    pipeline = _pipeline(args.checkpoint, args.device)
    with _counting(pipeline, args, f"eval {args.data}", len(split.query) + len(split.gallery)):
        metrics = pipeline.evaluate_split(split, use_mask=not args.no_mask, batch_size=args.batch_size)
    mode = "no mask" if args.no_mask else "masked"
    _print_metrics(metrics.summary(), args.json, f"{args.checkpoint} on {args.data} ({mode})")
    if args.record:
        record_final(Path(args.checkpoint), args.data, "unmasked" if args.no_mask else "masked", metrics.summary())
    return 0


def record_final(folder: Path, dataset: str, mode: str, summary: dict) -> None:
    """Add an evaluation to the checkpoint's metrics.json ("final" -> dataset -> mode), atomically."""
    from dpmpp.atomic import write_json
    from dpmpp.engine.checkpoint import METRICS

    path = folder / METRICS
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics.setdefault("final", {}).setdefault(dataset, {})[mode] = summary
    write_json(path, metrics)


class ProgressPrinter:
    """Training progress on stderr: a bar redrawn at every step on a terminal (elsewhere, a line per epoch), and
    a line per evaluation."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.line = StatusLine(stream)
        self.stream = self.line.stream

    def __call__(self, event) -> None:
        if event.kind == "eval":
            self.line.close()
            for split, results in event.metrics.items():
                if isinstance(results, dict):
                    for mode, m in results.items():
                        self.stream.write(
                            f"  eval epoch {event.epoch} {split} {mode}: rank-1 {100 * m['rank1']:.1f} "
                            f"mAP {100 * m['mAP']:.1f} mINP {100 * m['mINP']:.1f}\n"
                        )
            self.stream.flush()
            return
        losses = " ".join(f"{k} {v:.3f}" for k, v in list(event.losses.items())[:4])
        accuracy = f" acc {100 * event.accuracy:.0f}%" if event.accuracy is not None else ""
        self.line.show(
            f"{event.stage} {event.epoch}/{event.epochs} {bar(event.step, event.steps)} "
            f"{losses}{accuracy} {event.images_per_s:.0f} img/s ETA {event.eta_s / 60:.1f} min",
            force=event.step >= event.steps,
        )

    def close(self) -> None:
        self.line.close()


def cmd_train(args) -> int:
    from dpmpp.config import apply_overrides, load_preset

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
    apply_overrides(config, args.set or [])  # validates the whole config, the flags above included
    _data_root(config.data.name, config.data.root)  # a dataset without a bundled folder needs --root

    from dpmpp.engine.train import train

    printer = None if args.quiet else ProgressPrinter()
    try:
        final = train(config, args.out, resume=args.resume, device=args.device, callback=printer)
    finally:
        if printer is not None:
            printer.close()
    if final:
        print(json.dumps(final.get("final", final)))
    return 0


def cmd_embed(args) -> int:
    import numpy as np

    pipeline = _pipeline(args.checkpoint, args.device)
    with _counting(pipeline, args, "embed", len(args.images)):
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


def cmd_bundle(args) -> int:
    from dpmpp.engine.checkpoint import bundle

    size = bundle(args.source, args.target, half=not args.keep_float32)
    print(f"wrote {args.target} ({size / 1e6:.1f} MB{'' if args.keep_float32 else ', float16 weights'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dpmpp", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error, not one line")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build-data", help="build a benchmark from raw data")
    build.add_argument("source", choices=["pets09", "cuhk01"], help="which raw source")
    build.add_argument("--video", help="pets09: PETS09-S2L1 vtest.avi")
    build.add_argument("--gt", help="pets09: MOTChallenge gt.txt")
    build.add_argument("--groups", help="pets09: track -> person grouping CSV")
    build.add_argument("--cuhk01", help="cuhk01: the release folder (campus/NNNNMMM.png)")
    build.add_argument("--occluders", help="cuhk01: occluder bank folder (default: the bundled PETS09 bank)")
    build.add_argument("--out", required=True, help="output folder")
    build.add_argument("--quiet", action="store_true", help="no progress line")
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
    evaluate.add_argument(
        "--record", action="store_true", help="also write the result into the checkpoint's metrics.json (final)"
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=cmd_eval)

    train = commands.add_parser("train", help="train DPM++ (both stages) and write a checkpoint folder")
    train.add_argument("--config", default="tiny", help="preset name (tiny, osnet, omz, vit_b16) or a JSON file")
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
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    embed.set_defaults(func=cmd_embed)

    ship = commands.add_parser("bundle", help="copy a finished checkpoint for shipping (no resume state, float16)")
    ship.add_argument("source", help="checkpoint folder")
    ship.add_argument("target", help="folder to write")
    ship.add_argument("--keep-float32", action="store_true", help="keep float32 weights")
    ship.set_defaults(func=cmd_bundle)

    from dpmpp.bench.cli import add_bench_parser

    add_bench_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; an expected error prints `error: ...` on stderr and returns 2 (with --debug it is raised)."""
    args = build_parser().parse_args(argv)
    handler = _LineAwareHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    if args.debug:
        return args.func(args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except Exception as error:
        if not is_expected(error):
            raise
        sys.stderr.write(f"error: {error_line(error)}\n")
        return EXIT_USER_ERROR
