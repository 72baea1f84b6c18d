"""Response times of the app's interactive steps for one visitor (`python -m dpmpp bench app`).

Starts the app on loopback with the bundled model (as `bench load` does) and waits until it says its caches are
filled. Then it calls every interactive endpoint as the page does (Gradio's queue protocol, output files fetched;
the client of `bench load`): once to warm it, then `repeats` times, on pets09_occ and then on cuhk01_occ. Prints
the median and maximum seconds per step. The first switch to a benchmark, its first map and its first failure table
against a model B are timed apart: they embed or fit what later calls read from the caches.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from dpmpp.bench.load import Endpoints, PageClient, Server, http_client

HSV = "HSV colour floor (no model)"


def paste(i: int) -> tuple:  # every call another place, so no call reuses another's embedding
    return ("sign", 0.3 + 0.04 * (i % 10), 0.45, 0.4)


# label -> (api name, arguments of call i): each call differs from the others (query, place, scale, shift), so that
# no embedding remembered from an earlier call is reused, as a new click of a visitor would not
STEPS = {
    "select a query": ("/select_query", lambda i: (7 + i,)),
    "paste an occluder": ("/occlude_paste", paste),
    "patch transfer": ("/occlude_transfer", lambda i: ("auto", i % 4)),
    "retrieve (top-10, both strips)": ("/retrieve", lambda i: (10, True)),
    "mask": ("/mask", lambda i: (0.5,)),
    "Grad-CAM": ("/explain", lambda i: ()),
    "compare with model B (HSV)": ("/compare_models", lambda i: (HSV, True)),
    "occlusion sensitivity, 50 places, A and B": (
        "/occlusion_sensitivity",
        lambda i: (HSV, "grey block", 0.3 + 0.01 * i, "5 × 10 (50 places)", "AP", True, True),
    ),
    "pictures (96, failures first)": ("/query_thumbnails", lambda i: ("", False)),
    "failure table": ("/failures", lambda i: ("all", 0, False, "none", "all")),
    "failure table vs model B": ("/failures", lambda i: ("all", 0, False, HSV, "all")),
    "map (UMAP, cached per model)": ("/umap", lambda i: ("identity", "")),
}
CUHK01_STEPS = (  # what differs on 972 queries and 972 gallery crops
    "select a query",
    "paste an occluder",
    "retrieve (top-10, both strips)",
    "mask",
    "pictures (96, failures first)",
    "failure table",
    "failure table vs model B",
    "map (UMAP, cached per model)",
)


PAUSE_S = 0.2  # between calls: a visitor clicks a few times a second at most (the server limits a page to 8/s)


def timed(client, api_name: str, args: tuple) -> float:
    started = time.perf_counter()
    client.predict(*args, api_name=api_name)
    seconds = time.perf_counter() - started
    time.sleep(PAUSE_S)
    return seconds


def run(repeats: int = 5) -> tuple[list[dict], dict]:
    """Rows of (benchmark, step, median s, max s) and the first-time costs."""
    folder = Path(tempfile.mkdtemp(prefix="dpmpp_app_timing_"))
    server = Server(folder)
    rows, first = [], {}
    try:
        server.ready.wait(600)
        http = http_client(600.0)
        client = PageClient(http, server.url, Endpoints(http, server.url), 600.0)
        for benchmark, steps in (("pets09_occ", list(STEPS)), ("cuhk01_occ", CUHK01_STEPS)):
            if benchmark != "pets09_occ":
                switch = timed(client, "/switch_benchmark", (benchmark,))
                first[f"first switch to {benchmark} (embedded at start)"] = switch
                first[f"first map of {benchmark}"] = timed(client, "/umap", ("identity", ""))
                first[f"first failure table of {benchmark} vs model B"] = timed(
                    client, "/failures", ("all", 0, False, HSV, "all")
                )
            for label in steps:
                api_name, make = STEPS[label]
                times = []
                for i in range(-1, repeats):  # call -1 warms the step
                    if label != "select a query":  # the other steps act on the session's query, occluded anew
                        timed(client, "/select_query", (20 + i,))
                        if label not in ("paste an occluder", "patch transfer"):
                            timed(client, "/occlude_paste", paste(i + 3))
                    seconds = timed(client, api_name, make(i))
                    times += [seconds] if i >= 0 else []
                rows.append(
                    {"benchmark": benchmark, "step": label, "median_s": statistics.median(times), "max_s": max(times)}
                )
    finally:
        server.close()
        shutil.rmtree(folder, ignore_errors=True)
    return rows, first


def format_table(rows: list[dict], first: dict) -> str:
    lines = ["| benchmark | step | median s | max s |", "|---|---|---:|---:|"]
    lines += [f"| {r['benchmark']} | {r['step']} | {r['median_s']:.2f} | {r['max_s']:.2f} |" for r in rows]
    lines += ["", "| once per model and benchmark | s |", "|---|---:|"]
    lines += [f"| {label} | {seconds:.1f} |" for label, seconds in first.items()]
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per step, after one warm-up call (5)")


def main(args) -> int:
    rows, first = run(args.repeats)
    print(format_table(rows, first))
    return 0
