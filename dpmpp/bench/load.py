"""`bench load`: a class on one server.

Starts the app on loopback in classroom mode (bundled default model) as a subprocess, waits until it says its caches
are filled (a teacher starts it before the class), optionally has the teacher start a training through the app's
API, then lets N students work at once, each with its own session, speaking Gradio's queue protocol as the page
does: select a query, paste an occluder, retrieve, show the mask, `rounds` times, pausing `think_s` between clicks,
while polling the training status every `poll_s` like the page's timer. Records each step's latency and errors, the
CPU time of the server, its training process and the load generator itself (which shares the cores here, where a
real class's browsers would not), and samples the server's memory and the disk its folders use.
`python -m dpmpp bench load --students 30 --rounds 3 [--no-training]`. A benchmark, not a test.
"""

from __future__ import annotations

import json
import math
import os
import queue
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.request import urlopen

from dpmpp.paths import DEFAULT_CHECKPOINT, PROJECT_ROOT

APP = PROJECT_ROOT / "app.py"
STEPS = ("open page", "select_query", "occlude_paste", "retrieve", "mask", "train_status")
OCCLUDERS = ("sign", "pole")  # scene occluders of the bundled bank, pasted by name
QUERIES = 213  # queries of the bundled benchmark (pets09_occ)
MB = 1 << 20


@dataclass
class LoadResult:
    students: int
    rounds: int
    with_training: bool
    think_s: float
    poll_s: float
    poll_always: bool = False  # students poll the status all class long (the page polls only on the Model tab)
    wall_s: float = 0.0  # from the first student opening the page to the last one's last step
    latencies: dict[str, list[float]] = field(default_factory=dict)  # seconds of each successful call, per step
    errors: dict[str, list[str]] = field(default_factory=dict)  # the error of each failed call, per step
    memory: list[dict] = field(default_factory=list)  # samples: t, server_mb, training_mb (the server's children)
    disk: list[dict] = field(default_factory=list)  # samples: t, then MB per folder
    training: str = ""  # the training status at the end
    training_setup: str = ""  # what the teacher started
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds during the class: server, training, clients
    calls: list[tuple[float, str, float]] = field(default_factory=list)  # (start s, step, latency s) per call

    def rows(self) -> list[dict]:
        """One row per step: calls, errors, p50, p95 and max latency in ms (NaN where no call succeeded)."""
        rows = []
        for step in STEPS:
            times = sorted(self.latencies.get(step, []))
            errors = len(self.errors.get(step, []))
            rows.append(
                {
                    "step": step,
                    "calls": len(times) + errors,
                    "errors": errors,
                    "p50_ms": 1000 * percentile(times, 50),
                    "p95_ms": 1000 * percentile(times, 95),
                    "max_ms": 1000 * times[-1] if times else math.nan,
                }
            )
        return rows

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "rows": self.rows()})


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of an ascending list; NaN for an empty one."""
    if not sorted_values:
        return math.nan
    rank = max(math.ceil(q / 100 * len(sorted_values)), 1)
    return sorted_values[rank - 1]


# ----- the server -------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """The app in classroom mode on loopback, writing only under `folder`: checkpoints, Gradio's uploads and cache,
    and its temporary files each in a subfolder, so that their disk use can be measured."""

    def __init__(self, folder: Path, app: Path = APP, port: int | None = None, start_timeout_s: float = 300) -> None:
        self.folder, self.port = folder, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.folders = {
            "checkpoint folder": folder / "checkpoints",
            "uploads and cache": folder / "gradio",
            "temporary files": folder / "tmp",
        }
        for path in self.folders.values():
            path.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_urlsafe(16)
        env = {
            **os.environ,
            "GRADIO_ANALYTICS_ENABLED": "False",
            "GRADIO_TEMP_DIR": str(self.folders["uploads and cache"]),
            "TMPDIR": str(self.folders["temporary files"]),
            "DPMPP_TEACHER_TOKEN": self.token,
        }
        command = [sys.executable, str(app), "--port", str(self.port), "--classroom"]
        command += ["--checkpoint-dir", str(self.folders["checkpoint folder"]), "--checkpoint", str(DEFAULT_CHECKPOINT)]
        self.log = folder / "server.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=log, env=env, text=True
            )
        self._printed: list[str] = []
        self.ready = threading.Event()  # the app said its caches are filled
        threading.Thread(target=self._read_console, daemon=True).start()
        self._wait_until_up(start_timeout_s)

    def _read_console(self) -> None:
        for line in self.process.stdout:
            self._printed.append(line)
            found = re.search(r"[?&]teacher=([\w-]+)", line)
            if found:  # the token the server printed is the one it checks
                self.token = found.group(1)
            if line.startswith("dpmpp app ready"):
                self.ready.set()

    def _wait_until_up(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                urlopen(self.url, timeout=2)
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(1)
        self.close()
        raise RuntimeError(f"the app did not start; the end of its log:\n{self.log.read_text()[-3000:]}")

    def memory(self) -> dict:
        """RSS in MB of the server process and, apart, of its children (the training process)."""
        import psutil

        try:
            server = psutil.Process(self.process.pid)
            children = server.children(recursive=True)
            rss = server.memory_info().rss
        except psutil.Error:
            return {"server_mb": math.nan, "training_mb": math.nan}
        training = 0
        for child in children:
            try:
                training += child.memory_info().rss
            except psutil.Error:
                pass
        return {"server_mb": rss / MB, "training_mb": training / MB}

    def cpu_seconds(self) -> dict:
        """CPU seconds (user + system) used so far by the server and, apart, by its live children."""
        import psutil

        try:
            server = psutil.Process(self.process.pid)
            times = server.cpu_times()
            children = server.children(recursive=True)
        except psutil.Error:
            return {"server": math.nan, "training": math.nan}
        training = 0.0
        for child in children:
            try:
                child_times = child.cpu_times()
                training += child_times.user + child_times.system
            except psutil.Error:
                pass
        return {"server": times.user + times.system, "training": training}

    def disk(self) -> dict:
        return {name: folder_bytes(path) / MB for name, path in self.folders.items()}

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def folder_bytes(folder: Path) -> int:
    """Bytes on disk under `folder` (allocated blocks), 0 if it is gone."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


# ----- the class ----------------------------------------------------------------------------------------------
class Recorder:
    def __init__(self, result: LoadResult) -> None:
        self.result, self._lock, self._zero = result, threading.Lock(), time.perf_counter()

    def call(self, step: str, fn, *args, **kwargs):
        started = time.perf_counter()
        try:
            value = fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - counted and shown, the student goes on
            with self._lock:
                self.result.errors.setdefault(step, []).append(f"{type(error).__name__}: {str(error)[:200]}")
            return None
        with self._lock:
            self.result.latencies.setdefault(step, []).append(time.perf_counter() - started)
            self.result.calls.append((started - self._zero, step, time.perf_counter() - started))
        return value


class AppError(RuntimeError):
    """A call the app answered with an error, or refused (queue full)."""


class Endpoints:
    """The app's named events, read once from its `/config`: per API name, the event id and how to fill its inputs
    (state inputs are kept by the server; other inputs not given take their component's initial value)."""

    def __init__(self, http, url: str) -> None:
        config = http.get(url + "config").raise_for_status().json()
        components = {c["id"]: c for c in config["components"]}
        self.events = {}
        for dependency in config["dependencies"]:
            inputs = [components[i] for i in dependency["inputs"]]
            self.events[dependency.get("api_name")] = (
                dependency["id"],
                [(c["type"] == "state", c.get("props", {}).get("value")) for c in inputs],
            )

    def payload(self, api_name: str, args: tuple) -> dict:
        fn_index, inputs = self.events[api_name]
        given, data = list(args), []
        for is_state, initial in inputs:
            data.append(None if is_state else given.pop(0) if given else initial)
        return {"fn_index": fn_index, "data": data, "event_data": None, "trigger_id": None}


class PageClient:
    """What one browser tab asks of the server, over Gradio's own queue protocol: join an event, then read the
    session's one event stream (as the page does, one reader for every event of the session, the status poll's
    included); output files are fetched as the page would show them. Lighter than `gradio_client`, so that the load
    generator, which shares the server's cores here, takes little from it."""

    def __init__(self, http, url: str, endpoints: Endpoints, timeout_s: float = 300.0) -> None:
        self.http, self.url, self.endpoints, self.timeout_s = http, url, endpoints, timeout_s
        self.session = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._waiting: dict[str, queue.Queue] = {}  # event id -> where its result goes
        self._early: dict[str, dict] = {}  # results read before their caller registered
        self._reading = False
        http.get(url).raise_for_status()  # the page; its config is what `endpoints` read
        http.get(url + "config").raise_for_status()

    def predict(self, *args, api_name: str):
        body = {**self.endpoints.payload(api_name.lstrip("/"), args), "session_hash": self.session}
        joined = self.http.post(self.url + "gradio_api/queue/join", json=body)
        if joined.status_code == 503:
            raise AppError("queue full")
        event = joined.raise_for_status().json()["event_id"]
        box: queue.Queue = queue.Queue(maxsize=1)
        with self._lock:
            if event in self._early:
                box.put(self._early.pop(event))
            else:
                self._waiting[event] = box
            if not self._reading:
                self._reading = True
                threading.Thread(target=self._read, daemon=True).start()
        try:
            message = box.get(timeout=self.timeout_s)
        except queue.Empty:
            raise AppError(f"no result in {self.timeout_s:g} s") from None
        finally:
            with self._lock:
                self._waiting.pop(event, None)
        output = message.get("output") or {}
        if not message.get("success"):
            raise AppError(str(output.get("error") or message.get("title") or "error"))
        data = output.get("data", [])
        for value in data:  # the page loads the images it is sent
            if isinstance(value, dict) and value.get("url"):
                self.http.get(value["url"]).raise_for_status()
        return data

    def _read(self) -> None:
        """The session's event stream, until the server closes it; reopened while events are still awaited."""
        while True:
            try:
                with self.http.stream(
                    "GET", self.url + "gradio_api/queue/data", params={"session_hash": self.session}
                ) as response:
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            self._dispatch(json.loads(line[5:]))
            except Exception:  # noqa: BLE001 - a dropped stream is reopened; a caller times out at worst
                time.sleep(0.2)
            with self._lock:
                if not self._waiting:
                    self._reading = False
                    return

    def _dispatch(self, message: dict) -> None:
        if message.get("msg") != "process_completed":
            return
        with self._lock:
            box = self._waiting.get(message.get("event_id"))
            if box is None:
                self._early[message.get("event_id")] = message
            else:
                box.put(message)

    def close(self) -> None:
        pass


def http_client(timeout_s: float):
    import httpx

    return httpx.Client(timeout=timeout_s, limits=httpx.Limits(max_connections=None, max_keepalive_connections=200))


def student(url: str, index: int, result: LoadResult, recorder: Recorder, http, endpoints: Endpoints, seed: int):
    """One student: open the page, then `rounds` times select, paste, retrieve, mask; the status polled meanwhile."""
    rng = random.Random(seed * 1000 + index)
    pause = lambda: time.sleep(result.think_s * rng.uniform(0.5, 1.5))
    client = recorder.call("open page", PageClient, http, url, endpoints, http.timeout.read or 300.0)
    if client is None:
        return
    done, left_model_tab = threading.Event(), threading.Event()  # the page opens on the Model tab

    def poll() -> None:  # the page's gr.Timer(2.0), which runs while the Model tab is open
        while not done.wait(result.poll_s) and not (left_model_tab.is_set() and not result.poll_always):
            recorder.call("train_status", client.predict, api_name="/train_status")

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        for _ in range(result.rounds):
            left_model_tab.set()  # to the Query & occlude tab
            recorder.call("select_query", client.predict, rng.randrange(QUERIES), api_name="/select_query")
            pause()
            x, y, scale = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.8)
            recorder.call(
                "occlude_paste", client.predict, rng.choice(OCCLUDERS), x, y, scale, api_name="/occlude_paste"
            )
            pause()
            recorder.call("retrieve", client.predict, 10, True, api_name="/retrieve")
            pause()
            recorder.call("mask", client.predict, 0.5, api_name="/mask")
            pause()
    finally:
        done.set()
        poller.join()


def sample_forever(server: Server, result: LoadResult, started: float, stop: threading.Event, every_s: float) -> None:
    while True:
        t = round(time.monotonic() - started, 1)
        result.memory.append({"t": t, **server.memory()})
        result.disk.append({"t": t, **server.disk()})
        if stop.wait(every_s):
            return


def start_teacher_training(url: str, token: str, http, endpoints: Endpoints, preset: str, epochs: int):
    """The teacher logs in with the token and starts a training; returns the teacher's client once the training has
    taken its first step (or after two minutes)."""
    teacher = PageClient(http, url, endpoints)
    teacher.predict(token, api_name="/teacher_login")
    teacher.predict("pets09_occ", "", preset, epochs, "load_bench", ["dynamic mask", "text stage"], api_name="/train")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = teacher.predict(api_name="/train_status")[0]
        if "step" in text or "running" not in text:
            break
        time.sleep(2)
    return teacher


def teacher_polls(teacher, recorder, every_s: float, class_over: threading.Event) -> None:
    while not class_over.wait(every_s):
        recorder.call("train_status", teacher.predict, api_name="/train_status")


def run_load(
    students: int = 30,
    rounds: int = 3,
    with_training: bool = True,
    think_s: float = 1.0,
    poll_s: float = 2.0,
    train_preset: str = "tiny",
    train_epochs: int = 200,
    seed: int = 0,
    timeout_s: float = 300.0,
    sample_s: float = 1.0,
    port: int | None = None,
    app: str | Path = APP,
    keep: str | Path | None = None,
    poll_always: bool = False,
) -> LoadResult:
    """Start the app, run the class, stop the training and the app; returns what was measured.

    `keep`: a folder to run in and leave behind (the server's log, checkpoints, uploads); default: a temporary one.
    """
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="dpmpp_load_"))
    folder.mkdir(parents=True, exist_ok=True)
    result = LoadResult(students, rounds, with_training, think_s, poll_s, poll_always)
    server = Server(folder, Path(app), port)
    stop_sampling, teacher = threading.Event(), None
    sampler = threading.Thread(
        target=sample_forever, args=(server, result, time.monotonic(), stop_sampling, sample_s), daemon=True
    )
    try:
        sampler.start()
        server.ready.wait(300)  # a teacher starts the app before the class: its caches are filled
        http = http_client(timeout_s)
        endpoints = Endpoints(http, server.url)
        warm = Recorder(LoadResult(1, 1, False, 0.0, poll_s))  # the teacher tries the page before the class
        student(server.url, -1, warm.result, warm, http, endpoints, seed)
        if with_training:
            teacher = start_teacher_training(server.url, server.token, http, endpoints, train_preset, train_epochs)
            result.training_setup = f"{train_preset}, {train_epochs} epochs, pets09_occ"
        recorder = Recorder(result)
        started, cpu_before, own_before = time.monotonic(), server.cpu_seconds(), _own_cpu_seconds()
        threads = [
            threading.Thread(target=student, args=(server.url, i, result, recorder, http, endpoints, seed))
            for i in range(students)
        ]
        class_over = threading.Event()
        if teacher is not None:  # the teacher watches the training on the Model tab, polled as the page does
            threads.append(threading.Thread(target=teacher_polls, args=(teacher, recorder, poll_s, class_over)))
        for thread in threads:
            thread.start()
        for thread in threads[:students]:
            thread.join()
        class_over.set()
        for thread in threads[students:]:
            thread.join()
        result.wall_s = time.monotonic() - started
        cpu_after = server.cpu_seconds()
        result.cpu_s = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
        result.cpu_s["students' clients"] = _own_cpu_seconds() - own_before
        if teacher is not None:
            result.training = teacher.predict(api_name="/train_status")[0]
            teacher.predict(api_name="/stop_training")
    finally:
        stop_sampling.set()
        sampler.join()
        server.close()
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    return result


# ----- the table ------------------------------------------------------------------------------------------------
def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:,.0f}"


def _mb(values: list[float], digits: int = 0) -> tuple[str, str, str]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return ("–", "–", "–")
    return tuple(f"{v:,.{digits}f}" for v in (finite[0], max(finite), finite[-1]))


def format_table(result: LoadResult) -> str:
    training = f"a teacher training running ({result.training_setup})" if result.with_training else "no training"
    pollers = "every student, all class long" if result.poll_always else "the teacher and students on the Model tab"
    lines = [
        f"{result.students} students × {result.rounds} rounds, {training}; {result.think_s:g} s between clicks, "
        f"status polled every {result.poll_s:g} s by {pollers}; {result.wall_s:.0f} s",
        "",
        "| step | calls | errors | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in result.rows():
        lines.append(
            f"| {row['step']} | {row['calls']} | {row['errors']} | {_ms(row['p50_ms'])} | {_ms(row['p95_ms'])} | "
            f"{_ms(row['max_ms'])} |"
        )
    lines += ["", "| memory, disk (MB) | start | peak | end |", "|---|---:|---:|---:|"]
    memory = {"server RSS": "server_mb", "training process RSS": "training_mb"}
    for label, key in memory.items():
        lines.append(f"| {label} | " + " | ".join(_mb([s[key] for s in result.memory])) + " |")
    for name in [k for k in (result.disk[0] if result.disk else {}) if k != "t"]:
        lines.append(f"| {name} (disk) | " + " | ".join(_mb([s[name] for s in result.disk], 1)) + " |")
    if result.cpu_s:
        cores = os.cpu_count() or 1
        used = ", ".join(f"{name} {seconds:,.0f} s" for name, seconds in result.cpu_s.items())
        lines += ["", f"CPU time during the class ({cores} cores × {result.wall_s:.0f} s available): {used}"]
    if result.training:
        lines += ["", f"Training at the end: {result.training}"]
    seen = sorted({f"{step}: {error}" for step, errors in result.errors.items() for error in errors})
    if seen:
        lines += ["", "Errors (distinct):"] + [f"- {error}" for error in seen[:10]]
    return "\n".join(lines)


# ----- the command ----------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--students", type=int, default=30, help="students working at once (30)")
    parser.add_argument("--rounds", type=int, default=3, help="select-paste-retrieve-mask rounds per student (3)")
    parser.add_argument(
        "--no-training", dest="with_training", action="store_false", help="no teacher training during the class"
    )
    parser.add_argument("--think-s", type=float, default=1.0, help="a student's pause between clicks (1 s, ±50%%)")
    parser.add_argument("--poll-s", type=float, default=2.0, help="training status polled this often (2 s)")
    parser.add_argument(
        "--poll-always",
        action="store_true",
        help="every student polls the status all class long (the page polls only while its Model tab is open)",
    )
    parser.add_argument("--train-preset", default="tiny", help="the teacher's training preset (tiny)")
    parser.add_argument("--train-epochs", type=int, default=200, help="its stage-2 epochs; stopped at the end (200)")
    parser.add_argument("--port", type=int, default=None, help="the app's port (default: a free one)")
    parser.add_argument("--keep", default=None, help="run in this folder and keep it (log, checkpoints, uploads)")
    parser.add_argument("--out", default=None, help="also write the result as JSON here")


def main(args) -> int:
    result = run_load(
        students=args.students,
        rounds=args.rounds,
        with_training=args.with_training,
        think_s=args.think_s,
        poll_s=args.poll_s,
        train_preset=args.train_preset,
        train_epochs=args.train_epochs,
        port=args.port,
        keep=args.keep,
        poll_always=args.poll_always,
    )
    if args.out:
        Path(args.out).write_text(result.to_json())
    print(format_table(result))
    return 0
