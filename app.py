"""dpmpp app: inspect occluded person re-identification with DPM++ in the browser.

`python app.py` serves http://127.0.0.1:7860 with the bundled model and benchmark. This file only parses the flags
and launches the app; the views are in dpmpp/app/, all model logic is in dpmpp.api / dpmpp.explorer, all figures in
dpmpp.viz.

Classroom mode (`--classroom`, and the default for any `--host` other than loopback): every visitor can query,
occlude, inspect, compare and export; training, stopping another session's training, uploading checkpoints and
loading unlisted folders are for the teacher, who opens the URL printed at start (`?teacher=TOKEN`) or enters the
token in the Model tab. In every mode, a session idle for `--idle-minutes` is dropped, uploads are checked from their
header before anything decodes them, and errors reach visitors without server paths.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from pathlib import Path

import torch
from starlette.middleware import Middleware

from dpmpp.api import ASSETS, CHECKPOINTS
from dpmpp.app.classroom import expire_sessions_forever, is_loopback
from dpmpp.app.common import FIGURE_HEAD, KEYBOARD_HEAD, PRESENTER_CSS, SETTINGS
from dpmpp.app.guards import BusyMessage, RateLimit, UploadQuota
from dpmpp.app.layout import build_demo
from dpmpp.app.map_page import HEAD, PLOTLY_JS
from dpmpp.app.page_cache import PageCache
from dpmpp.app.state import BENCHMARKS, start_checkpoint, warm_up
from dpmpp.app.views import retrieval

__all__ = ["build_demo", "main", "parse_args"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    parser.add_argument(
        "--classroom",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="students may not train, upload checkpoints or load unlisted folders (default: on for any --host "
        "other than loopback)",
    )
    parser.add_argument("--idle-minutes", type=float, default=30.0, help="drop a session unused this long")
    parser.add_argument("--queue-size", type=int, default=64, help="requests waiting at most; more are refused")
    parser.add_argument("--checkpoint-quota-mb", type=int, default=2048, help="size limit of --checkpoint-dir")
    parser.add_argument("--upload-quota-mb", type=int, default=1024, help="visitors' uploads kept at one time")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder to load first (default: bundled)")
    parser.add_argument("--checkpoint-dir", default=str(CHECKPOINTS), help="folder of checkpoints to offer")
    parser.add_argument("--data-root", default=None, help="folder holding your own datasets (for training)")
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public share link (off by default)")
    parser.add_argument(
        "--benchmarks",
        default=",".join(BENCHMARKS),
        help=f"the benchmarks offered, comma-separated, the first shown first (default: {','.join(BENCHMARKS)}); "
        "each is embedded at start (kept on disk per model, so only a model's first start pays)",
    )
    return parser.parse_args(argv)


def parse_benchmarks(text: str) -> tuple[str, ...]:
    """`--benchmarks`: known names, at least one, in the given order."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown or not names:
        raise SystemExit(f"--benchmarks: {', '.join(unknown) or 'none given'}; choose from {', '.join(BENCHMARKS)}")
    return names


def warm_up_and_say(checkpoint: str, benchmarks: tuple[str, ...]) -> None:
    """Fill the slow caches, then tell the console: the first map and patch transfer answer at once from here on."""
    started = time.perf_counter()
    try:
        warm_up(checkpoint, benchmarks)
        retrieval.warm(checkpoint)
        filled = f"{time.perf_counter() - started:.0f} s to fill the map, patch-transfer and benchmark caches"
    except Exception:  # noqa: BLE001 - the views compute what is missing when asked
        logging.exception("warm-up failed; the views will compute their caches when first used")
        filled = "the warm-up failed, see the log; the first map will be slow"
    print(f"dpmpp app ready ({filled}).", flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests, one line each
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # Gradio's queue rebuilds a pandas summary of its last 10,000 events after every event (for its monitoring page,
    # which this app does not serve): 6 % of the server's CPU with thirty students. Summarise rarely, keep fewer.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")
    SETTINGS["checkpoint_dir"] = Path(args.checkpoint_dir).resolve()
    SETTINGS["data_root"] = args.data_root
    SETTINGS["classroom"] = args.classroom if args.classroom is not None else not is_loopback(args.host)
    SETTINGS["idle_minutes"] = args.idle_minutes
    SETTINGS["checkpoint_quota_mb"], SETTINGS["upload_quota_mb"] = args.checkpoint_quota_mb, args.upload_quota_mb
    if SETTINGS["classroom"]:
        torch.set_num_threads(1)  # many small requests at once: one core each, not every request on every core
        # OpenVINO queues concurrent embeddings on one stream: with every core, a class's burst of retrievals is
        # answered twice as fast as with one thread per request (which left the second core to nobody)
        SETTINGS["inference_threads"] = len(os.sched_getaffinity(0))
    SETTINGS["start"] = start = start_checkpoint(args.checkpoint)
    benchmarks = parse_benchmarks(args.benchmarks)
    demo = build_demo(start, benchmarks)
    threading.Thread(target=warm_up_and_say, args=(start, benchmarks), daemon=True).start()
    threading.Thread(target=expire_sessions_forever, args=(demo,), daemon=True).start()
    mode = "classroom mode" if SETTINGS["classroom"] else "open mode (every visitor may train and upload)"
    print(  # the console is the teacher's: the token is shown nowhere else
        f"dpmpp app, {mode}, on http://{args.host}:{args.port}/"
        f"{'' if args.share else ' (--share for a public link)'}\n"
        f"Teacher: http://{args.host}:{args.port}/?teacher={SETTINGS['teacher_token']}",
        flush=True,
    )
    demo.queue(max_size=args.queue_size, default_concurrency_limit=4).launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        quiet=not args.share,  # our own start lines above; Gradio's would suggest share=True in code
        allowed_paths=[str(ASSETS), str(PLOTLY_JS)],
        head=HEAD + KEYBOARD_HEAD + FIGURE_HEAD,
        css=PRESENTER_CSS,
        max_file_size="20mb",
        show_error=False,  # unexpected errors are logged here; visitors see a plain "Error"
        app_kwargs={
            "middleware": [
                Middleware(PageCache),
                Middleware(BusyMessage),
                Middleware(RateLimit),
                Middleware(UploadQuota, demo=demo, quota_bytes=args.upload_quota_mb << 20),
            ]
        },
    )


if __name__ == "__main__":
    main()
