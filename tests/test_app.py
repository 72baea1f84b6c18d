"""The app in three tiers: handlers called directly, gradio_client against a launched server, a real browser."""

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from dpmpp.app.common import SETTINGS
from dpmpp.app.state import explorer_for, partner_records, partner_saliency_for
from dpmpp.app.views.cases import export_case, import_case
from dpmpp.app.views.failures import failures, open_failure
from dpmpp.app.views.mask import mask_view
from dpmpp.app.views.model import start_training, upload_checkpoint
from dpmpp.app.views.occlude import occlude_paste, occlude_transfer
from dpmpp.app.views.picker import query_choices, select_query
from dpmpp.app.views.retrieval import retrieve
from dpmpp.paths import DEFAULT_CHECKPOINT

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = str(DEFAULT_CHECKPOINT)


# ----- tier 1: handlers ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def view():
    choices = query_choices(explorer_for(CHECKPOINT))
    return select_query(CHECKPOINT, choices[0][1])[0]


def test_queries_are_listed_failures_first():
    explorer = explorer_for(CHECKPOINT)
    choices = query_choices(explorer)
    aps = [explorer.metrics().ap[index] for _, index in choices]
    assert len(choices) == len(explorer.split.query) and aps == sorted(aps)


def test_paste_then_retrieve_marks_the_change(view):
    occluded_view, shown, info = occlude_paste(view, "sign", 0.5, 0.45, 0.4)
    assert "sign pasted" in info and occluded_view["occluded"].shape == view["clean"].shape
    assert (occluded_view["occluded"] != view["clean"]).any()
    clean_strip, occluded_strip, summary = retrieve(CHECKPOINT, occluded_view, 10, True)
    assert clean_strip is not None and occluded_strip is not None
    assert summary.count("AP ") == 2 and "hidden" in summary
    explorer = explorer_for(CHECKPOINT)
    expected = explorer.metrics().ap[view["query_index"]]
    assert f"AP {expected:.3f}" in summary.splitlines()[0]  # the as-given query's AP is the metric's


def test_transfer_takes_partner_silhouettes_from_the_benchmark(view):
    import re

    occluded_view, shown, gallery, info = occlude_transfer(CHECKPOINT, view, "auto", -1)
    assert "partner silhouette (background subtraction)" in [caption for _, caption in gallery]
    assert occluded_view["occlusion"]["method"] == "transfer"
    # the partner gives everything outside its silhouette (background, occluders), nothing inside it
    name = re.search(r"Partner `([^`]+)`", info).group(1)
    index = [Path(r.path).name for r in partner_records()].index(name)
    silhouette = partner_saliency_for(CHECKPOINT)[index] > 0.5
    shown_percent = int(re.search(r"(\d+)% of the pixels came from the partner", info).group(1))
    assert abs(shown_percent - 100 * (1 - silhouette.mean())) <= 1


def test_transfer_says_when_the_query_has_no_person_mask_and_auto_cannot_pair(view):
    """The default's saliency head stays below 0.5 (docs/results.md §0.0): the query's person mask is empty, every
    partner scores IoU 0, and the view says so instead of presenting the first partner as the best match."""
    from dpmpp.paths import PETS09_CHECKPOINT

    explorer = explorer_for(CHECKPOINT)
    assert explorer.pipeline.saliency([view["clean"]]).max() <= explorer.pipeline.config.aug.saliency_threshold
    _, _, _, info = occlude_transfer(CHECKPOINT, view, "auto", -1)
    assert "marks no patch of this query as person" in info and "IoU 0.00" in info
    assert f"Partner `{Path(partner_records()[0].path).name}`, shift 0 " in info

    tiny = str(PETS09_CHECKPOINT)  # its head does find the person: no such note
    tiny_view = select_query(tiny, query_choices(explorer_for(tiny))[0][1])[0]
    _, _, gallery, info = occlude_transfer(tiny, tiny_view, "auto", -1)
    assert "marks no patch" not in info and float(re.search(r"IoU ([0-9.]+)", info).group(1)) > 0


def test_mask_view_counts_active_dimensions(view):
    occluded_view = occlude_paste(view, "pole", 0.5, 0.5, 1.0)[0]
    bars, counts, contribution = mask_view(CHECKPOINT, occluded_view, 0.5)
    dims = explorer_for(CHECKPOINT).query.features.shape[1]
    assert len(bars.data) == 3 and len(bars.data[0].y) == dims
    embedded = explorer_for(CHECKPOINT).embed([view["clean"]])
    assert f"clean {(embedded.masks[0] > 0.5).sum()} of {dims}" in counts
    assert len(contribution.data) == 2  # first true match and top wrong match


def test_failures_filter_and_bins():
    table, cmc, bins, note, pictures, shown = failures(CHECKPOINT, "sign", 0.3, True)
    assert note.startswith("pets09_occ: 213 queries")
    shown = shown["queries"]
    assert shown == [int(q) for q in table["query"].head(48)]  # the pictures follow the table's order
    assert [caption for _, caption in pictures] == [f"#{q} AP {ap:.2f}" for q, ap in zip(shown, table["AP"])]
    assert len(table) > 0 and (table["occluder"] == "sign").all() and (table["occluded"] >= 0.3).all()
    assert (table["first true rank"] != 1).all() and list(table["AP"]) == sorted(table["AP"])
    assert {trace.name for trace in cmc.data} == {"mask on", "mask off"}
    assert {trace.name for trace in bins.data} == {
        "rank-1, mask on",
        "mAP, mask on",
        "rank-1, mask off",
        "mAP, mask off",
    }


def test_case_export_and_import_restore_the_view(view, tmp_path):
    occluded_view = occlude_paste(view, "person_P02", 0.3, 0.6, 0.8)[0]
    path = export_case(CHECKPOINT, occluded_view, 10, True)
    case = json.loads(Path(path).read_text())
    assert (
        case["occlusion"]["occluder"] == "person_P02"
        and len(case["mask"]) == explorer_for(CHECKPOINT).query.features.shape[1]
        and len(case["top"]) == 10
    )
    restored = import_case(CHECKPOINT, path)
    assert restored[1] == "pets09_occ"
    restored_view = restored[2]
    np.testing.assert_array_equal(restored_view["occluded"], occluded_view["occluded"])
    again = json.loads(Path(export_case(CHECKPOINT, restored_view, 10, True)).read_text())
    assert again["top"] == case["top"] and again["mask"] == case["mask"]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(gr.Error, match="not a dpmpp case"):
        import_case(CHECKPOINT, str(tmp_path / "bad.json"))


def test_training_refuses_a_path_outside_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setitem(SETTINGS, "data_root", str(tmp_path))
    with pytest.raises(gr.Error, match="inside the data root"):
        start_training("manifest", "../../etc", "tiny", 1, "x", [])


# ----- tier 2: gradio_client against a launched app -------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    checkpoints = tmp_path_factory.mktemp("checkpoints")
    shutil.copytree(DEFAULT_CHECKPOINT, checkpoints / DEFAULT_CHECKPOINT.name)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "app.py"),
            "--port",
            str(port),
            "--checkpoint-dir",
            str(checkpoints),
            "--checkpoint",
            str(checkpoints / DEFAULT_CHECKPOINT.name),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "0"},
    )
    url = f"http://127.0.0.1:{port}/"
    wait_until_up(url, process, lambda: process.stderr.read().decode())
    yield url, checkpoints
    process.terminate()
    process.wait(timeout=30)


def wait_until_up(url: str, process: subprocess.Popen, log) -> None:
    """Poll `url` for up to 6 minutes; if the server exits first, or never answers, raise."""
    from urllib.request import urlopen

    for _ in range(360):
        try:
            urlopen(url, timeout=1)
            return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(log()[-3000:]) from None
            time.sleep(1)
    raise RuntimeError(f"the app at {url} did not answer within 6 minutes")


def plotly_array(value) -> np.ndarray:
    """A figure's data array as plotly.js gets it: a list, or a typed array {"dtype", "bdata"[, "shape"]}."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        return array.reshape([int(n) for n in str(shape).split(",")]) if shape else array
    return np.asarray(value)


def test_client_drives_every_view(server, tmp_path):
    from gradio_client import Client, handle_file

    url, _ = server
    client = Client(url, verbose=False, httpx_kwargs={"timeout": 120})
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {
        "/load_model",
        "/train",
        "/occlude_transfer",
        "/occlude_paste",
        "/occlude_paint",
        "/mask",
        "/retrieve",
        "/umap",
        "/umap_select",
        "/failures",
        "/export_case",
        "/import_case",
        "/switch_benchmark",
        "/query_thumbnails",
        "/occlusion_sensitivity",
    } <= names
    card, _ = client.predict(str(server[1] / DEFAULT_CHECKPOINT.name), api_name="/load_model")  # State is not returned
    assert "pets09_occ" in card and "rank-1" in card
    client.predict(3, api_name="/select_query")
    occluded, gallery, info = client.predict("auto", -1, api_name="/occlude_transfer")
    assert "occlusion-aware IoU" in info and len(gallery) == 5 and Path(occluded).is_file()
    _, occluded_strip, summary = client.predict(10, True, api_name="/retrieve")
    assert occluded_strip is not None and "with synthetic occlusion" in summary
    _, info = client.predict("sign", 0.5, 0.4, 0.3, api_name="/occlude_paste")
    assert "sign pasted" in info
    base = np.zeros((80, 30, 4), np.uint8)
    base[:40, :, 3] = 255
    from PIL import Image

    layer = tmp_path / "layer.png"  # the upper half painted
    Image.fromarray(base).save(layer)
    editor = {"background": None, "layers": [handle_file(str(layer))], "composite": None}
    _, info = client.predict(editor, "black", api_name="/occlude_paint")
    painted = int(info.split("Painted ")[1].split("%")[0])
    assert abs(painted - 50) <= 3  # the 80-row layer is resized to the crop's height (nearest neighbour)
    figure, counts, _ = client.predict(0.5, api_name="/mask")
    assert "Active dimensions" in counts and json.loads(figure["plot"])["data"]
    table, _, _, note, pictures = client.predict("all", 0, False, api_name="/failures")
    assert len(pictures) == 48
    assert len(table["data"]) == 213 and note.startswith("pets09_occ: 213 queries")
    headers = table["headers"]
    person, kind = headers.index("occluding person"), headers.index("occluder")
    assert "top match" in headers
    assert all((row[person] is not None) == (row[kind] == "person") for row in table["data"])
    canvas, note = client.predict("correctness", api_name="/umap")
    assert "UMAP" in note and len(json.loads(canvas["figure"])["data"]) == 4  # gallery, query, prototypes, trail
    assert sum(1 for url in canvas["thumbs"] if url.startswith("/gradio_api/file=")) == 754 + 213
    gallery_trace = next(t for t in json.loads(canvas["figure"])["data"] if t["name"] == "gallery")
    first_gallery_point = int(plotly_array(gallery_trace["customdata"]).ravel()[0])  # prototypes come first
    grid, grid_note = client.predict(
        {**canvas, "event": {"type": "click", "point": first_gallery_point}}, api_name="/umap_select"
    )
    assert "Nearest neighbours" in grid_note and len(grid) >= 12
    grid, grid_note = client.predict(
        {
            **canvas,
            "event": {"type": "select", "points": list(range(first_gallery_point + 10, first_gallery_point + 90))},
        },
        api_name="/umap_select",
    )
    assert grid_note.startswith("80 points selected (showing the first 60)") and len(grid) == 60
    case_path = client.predict(10, True, api_name="/export_case")
    assert json.loads(Path(case_path).read_text())["occlusion"]["method"] == "paint"
    client.predict("person_P02", 0.4, 0.6, 0.7, api_name="/occlude_paste")
    pasted_case = json.loads(Path(client.predict(10, True, api_name="/export_case")).read_text())
    client.predict(7, api_name="/select_query")  # move away, then load the case back
    query, benchmark, occluded, top_k, use_mask, note = client.predict(
        handle_file(str(case_path)), api_name="/import_case"
    )
    assert benchmark == "pets09_occ"
    assert "painted regions are not stored" in note.lower()
    case_file = tmp_path / "pasted.json"
    case_file.write_text(json.dumps(pasted_case))
    query, _, occluded, top_k, use_mask, note = client.predict(handle_file(str(case_file)), api_name="/import_case")
    query = query["value"] if isinstance(query, dict) else query  # the client returns the dropdown's update
    assert query == pasted_case["query_index"] and "occlusion paste" in note and occluded is not None
    again = json.loads(Path(client.predict(10, True, api_name="/export_case")).read_text())
    assert again["top"] == pasted_case["top"] and again["mask"] == pasted_case["mask"]


def test_client_trains_with_progress_and_lists_the_result(server):
    from gradio_client import Client

    url, checkpoints = server
    client = Client(url, verbose=False, httpx_kwargs={"timeout": 120})
    status = client.predict(
        "pets09_occ", "", "tiny", 1, "from_client", ["dynamic mask", "text stage"], api_name="/train"
    )
    assert "running" in status
    with pytest.raises(Exception, match="already running"):
        client.predict("pets09_occ", "", "tiny", 1, "second", [], api_name="/train")
    seen_progress = False
    for _ in range(1800):  # the training runs niced on one thread: on a busy machine it takes many minutes
        text, plot, _ = client.predict(api_name="/train_status")
        seen_progress |= "stage" in text and "images/s" in text
        if "finished" in text or "failed" in text:
            break
        time.sleep(1)
    assert "finished" in text, text
    assert seen_progress and json.loads(plot["plot"])["data"]
    assert (checkpoints / "from_client" / "model.safetensors").is_file()


# ----- tier 3: a real browser ------------------------------------------------------------------------------------
def test_browser_clicks_through_every_view(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("Debian's chromium is not installed (.ci/run installs it with apt)")
    url, _ = server
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_selector("#model_card", timeout=60000)
        assert "pets09_occ" in page.inner_text("#model_card")
        page.get_by_role("tab", name="Query & occlude").click()
        page.wait_for_selector("#clean_image img", timeout=30000)
        page.get_by_role("tab", name="Paste an occluder").click()
        page.locator("#occlude_paste").click()
        page.wait_for_selector("#occluded_image img", timeout=30000)
        page.wait_for_function("document.querySelector('#occlusion_info').innerText.includes('pasted')")
        page.screenshot(path=str(tmp_path / "occlude.png"), full_page=True)
        page.get_by_role("tab", name="Mask").click()
        page.locator("#mask").click()
        page.wait_for_function(
            "document.querySelector('#mask_counts').innerText.includes('Active dimensions')", timeout=30000
        )
        page.wait_for_selector(".js-plotly-plot", timeout=30000)  # the mask bars, drawn by plotly.js
        page.get_by_role("tab", name="Retrieval").click()
        page.wait_for_selector("#occluded_strip img", timeout=30000)
        assert "AP" in page.inner_text("#summary")
        page.screenshot(path=str(tmp_path / "retrieval.png"), full_page=True)
        page.get_by_role("tab", name="Compare").click()
        page.locator("#compare").click()
        page.wait_for_selector("#strip_b img", timeout=120000)
        assert "HSV" in page.inner_text("#compare_note") and "A right" in page.inner_text("#compare_note")
        page.locator("#sweep").click()
        page.wait_for_selector("#sweep_plot .js-plotly-plot .main-svg", timeout=120000)
        scales = page.evaluate(
            "[...document.querySelector('#sweep_plot .js-plotly-plot').data].filter(t => t.type === 'heatmap')"
            # z arrives typed ({bdata, shape}) or nested
            ".map(t => [t.zmin, t.zmax, String(t.z.shape || [t.z.length, t.z[0].length]).replace(/ /g, '')])"
        )
        assert scales == [[0, 1, "10,5"], [0, 1, "10,5"]]  # both models, one AP scale, a 10 x 5 grid
        plot, panel = (page.locator(s).bounding_box() for s in ("#sweep_plot .main-svg >> nth=0", "#sweep_plot"))
        assert plot["width"] <= panel["width"] + 1 and plot["height"] > 300
        page.get_by_role("tab", name="Prototype space").click()
        page.locator("#umap").click()
        page.wait_for_function("document.querySelector('#umap_note').innerText.includes('UMAP')", timeout=120000)
        page.wait_for_selector("#umap_canvas .umap-plot .main-svg", timeout=30000)  # plotly.js, served locally
        point = page.locator("#umap_canvas .point").nth(300).bounding_box()
        page.mouse.move(point["x"] + point["width"] / 2, point["y"] + point["height"] / 2)
        page.wait_for_selector("#umap_canvas .umap-thumb img", timeout=10000)  # hover shows the crop
        page.mouse.click(point["x"] + point["width"] / 2, point["y"] + point["height"] / 2)
        page.wait_for_function("document.querySelector('#umap_grid_note').innerText.includes('Nearest')", timeout=30000)
        page.get_by_role("tab", name="Failures").click()
        page.locator("#failures").click()
        page.wait_for_function("document.querySelectorAll('#failure_table [role=row]').length > 5", timeout=30000)
        page.screenshot(path=str(tmp_path / "failures.png"), full_page=True)
        browser.close()
    assert (tmp_path / "retrieval.png").stat().st_size > 20000
    assert not errors, errors


def test_server_serves_assets_but_no_other_files(server):
    """Raw HTTP: a bundled crop is served; the project's source and system files are not."""
    from urllib.error import HTTPError
    from urllib.request import urlopen

    url, _ = server
    crop = sorted((ROOT / "assets/pets09_occ/crops/query").iterdir())[0]

    def status(path: str) -> int:
        try:
            with urlopen(f"{url}gradio_api/file={path}", timeout=10) as response:
                return response.status
        except HTTPError as error:
            return error.code

    assert status(str(crop)) == 200
    for forbidden in ("/etc/passwd", str(ROOT / "app.py"), str(ROOT / "dpmpp/api.py"), str(ROOT / ".git/config")):
        assert status(forbidden) in (403, 404), forbidden


def test_uploaded_checkpoint_is_saved_only_when_it_loads(tmp_path, monkeypatch):
    monkeypatch.setitem(SETTINGS, "checkpoint_dir", tmp_path)
    from dpmpp.api import CHECKPOINT_FILES

    files = [str(DEFAULT_CHECKPOINT / name) for name in CHECKPOINT_FILES]
    update, note = upload_checkpoint(files, "copy")
    assert (tmp_path / "copy" / "model.safetensors").is_file() and update["value"] == "copy"
    assert ("copy", "copy") in update["choices"]  # named without the server's path, in the label and the value
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((DEFAULT_CHECKPOINT / "config.json").read_text())
    (broken / "model.safetensors").write_bytes((DEFAULT_CHECKPOINT / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(gr.Error, match="Nothing was saved"):
        upload_checkpoint([str(broken / "config.json"), str(broken / "model.safetensors")], "bad")
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad.*"))
    with pytest.raises(gr.Error, match="missing"):
        upload_checkpoint([str(broken / "config.json")], "half")
    with pytest.raises(gr.Error, match="already exists"):
        upload_checkpoint(files, "copy")
    with pytest.raises(gr.Error, match="unexpected files"):
        upload_checkpoint([*files, str(ROOT / "README.md")], "extra")


def test_selecting_a_failure_row_opens_that_query():
    table = failures(CHECKPOINT, "all", 0, True)[0]

    class Selected:  # what Gradio passes for a click on cell (row 2, column 0)
        index = (2, 0)

    update, view, shown, _, info = open_failure(CHECKPOINT, table, None, Selected())
    query_index = int(table.iloc[2]["query"])
    assert update["value"] == query_index and view["query_index"] == query_index
    assert view["file"] == table.iloc[2]["file"] and view["file"] in info


def listening_addresses(port: int) -> set[str]:
    """Local addresses listening on `port`, read from /proc/net/tcp (state 0A = LISTEN)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_server_listens_on_loopback_only(server):
    port = int(server[0].rstrip("/").rsplit(":", 1)[1])
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing on 0.0.0.0 or ::


def test_two_sessions_stay_independent_while_a_training_runs(server):
    from gradio_client import Client

    url, _ = server
    first, second = (
        Client(url, verbose=False, httpx_kwargs={"timeout": 120}),
        Client(url, verbose=False, httpx_kwargs={"timeout": 120}),
    )
    first.predict(3, api_name="/select_query")
    first.predict("pole", 0.5, 0.5, 1.0, api_name="/occlude_paste")
    second.predict(7, api_name="/select_query")
    status = first.predict("pets09_occ", "", "tiny", 1, "concurrent", ["dynamic mask"], api_name="/train")
    assert "running" in status
    _, occluded_strip, summary = second.predict(10, True, api_name="/retrieve")
    assert occluded_strip is None and "synthetic occlusion" not in summary  # the other session's occluder is not here
    _, occluded_strip, summary = first.predict(10, True, api_name="/retrieve")
    assert occluded_strip is not None and "with synthetic occlusion" in summary
    text, _, _ = second.predict(api_name="/train_status")
    assert "running" in text  # retrieval answered while the training job was still going
    first.predict(api_name="/stop_training")


def test_uploads_over_the_size_limit_are_refused(server):
    """Raw HTTP multipart uploads: 1 kB is accepted, 21 MB is refused (the limit is 20 MB)."""
    import urllib.request
    import uuid

    url, _ = server

    def upload(size: int) -> int:
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="x.bin"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + os.urandom(size)
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(
            f"{url}gradio_api/upload",
            data=body,
            method="POST",
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert upload(1000) == 200
    assert upload(21 * 1024 * 1024) == 413
