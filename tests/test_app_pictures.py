"""The app's pictures as a projector shows them: one colour scale per map colouring, pictures that fit their panels,
no script errors in the page, views that say which query they show, and readable retrieval strips."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dpmpp.app.state import explorer_for
from dpmpp.paths import DEFAULT_CHECKPOINT
from tests.test_app import ROOT, free_port, plotly_array, wait_until_up

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
SHOTS = Path(os.environ.get("DPMPP_SHOTS", "/tmp/dpmpp_shots"))


@pytest.fixture(scope="module")
def server():
    """The app with the bundled model on a free port (stderr kept for the start-up error, if any)."""
    port, environment = free_port(), {**os.environ, "GRADIO_ANALYTICS_ENABLED": "0"}
    command = [sys.executable, str(ROOT / "app.py"), f"--port={port}", f"--checkpoint={DEFAULT_CHECKPOINT}"]
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, process, lambda: process.stderr.read().decode())
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False, httpx_kwargs={"timeout": 180})


def map_traces(client, colour_by: str) -> dict:
    client.predict(3, api_name="/select_query")
    client.predict("sign", 0.5, 0.4, 0.5, api_name="/occlude_paste")
    canvas, note = client.predict(colour_by, api_name="/umap")
    return {"note": note, **json.loads(canvas["figure"])}


def person_of(hover: str) -> int:
    return int(re.search(r"person (\d+)", hover).group(1))


# ----- 1. the map's colours ---------------------------------------------------------------------------------------
def test_a_person_has_one_colour_in_every_trace(client):
    figure = map_traces(client, "identity")
    traces = {t["name"]: t for t in figure["data"]}
    colour_of: dict[int, set] = {}
    for kind in ("gallery", "query", "prototype"):
        trace = traces[kind]
        colours = trace["marker"]["color"]
        assert all(isinstance(c, str) and c.startswith("#") for c in colours), kind  # resolved colours, no scale
        for hover, colour in zip(trace["text"], colours):
            colour_of.setdefault(person_of(hover), set()).add(colour)
    assert all(len(colours) == 1 for colours in colour_of.values()), colour_of
    assert len({next(iter(c)) for c in colour_of.values()}) == len(colour_of)  # persons tell apart
    legend = {t["name"]: t["marker"]["color"] for t in figure["data"] if t["name"].startswith("person ")}
    assert legend == {f"person {pid}": next(iter(c)) for pid, c in colour_of.items()}


def test_occlusion_colours_share_one_range(client):
    figure = map_traces(client, "occlusion")
    scaled = [t for t in figure["data"] if "cmin" in t.get("marker", {})]
    assert {t["name"] for t in scaled} >= {"gallery", "query"}
    assert {(t["marker"]["cmin"], t["marker"]["cmax"]) for t in scaled} == {(0, 1)}
    assert sum(bool(t["marker"].get("showscale")) for t in scaled) == 1  # one colour bar for all


def test_prototypes_are_drawn_among_their_persons_features(client):
    figure = map_traces(client, "identity")
    traces = {t["name"]: t for t in figure["data"]}
    stars = np.stack([plotly_array(traces["prototype"]["x"]), plotly_array(traces["prototype"]["y"])], 1)
    gallery = np.stack([plotly_array(traces["gallery"]["x"]), plotly_array(traces["gallery"]["y"])], 1)
    assert stars.std(0).mean() > 0.3 * gallery.std(0).mean()  # spread over the map, not piled in one spot
    assert "mean map position" in figure["note"] and "nearest" in traces["prototype"]["text"][0]
    labels = [a for a in figure["layout"]["annotations"] if a["text"] in ("clean", "occluded")]
    assert len(labels) == 2 and (labels[0]["ax"], labels[0]["ay"]) != (labels[1]["ax"], labels[1]["ay"])


def test_a_selection_of_the_trail_alone_says_nothing_was_selectable(client):
    canvas, _ = client.predict("identity", api_name="/umap")
    grid, note = client.predict({**canvas, "event": {"type": "select", "points": []}}, api_name="/umap_select")
    assert grid == [] and "Nothing selectable" in note


# ----- the browser: pictures fit, no script errors -------------------------------------------------------------------
def inside(box: dict, panel: dict, slack: float = 1.0) -> bool:
    return (
        box["x"] >= panel["x"] - slack
        and box["y"] >= panel["y"] - slack
        and box["x"] + box["width"] <= panel["x"] + panel["width"] + slack
        and box["y"] + box["height"] <= panel["y"] + panel["height"] + slack
    )


# The height at which an <img> shows its picture: its box, scaled as its object-fit says (scale-down never enlarges).
DRAWN_HEIGHT = """(selector) => {
  const img = document.querySelector(selector), fit = getComputedStyle(img).objectFit;
  let ratio = Math.min(img.clientWidth / img.naturalWidth, img.clientHeight / img.naturalHeight);
  if (fit === 'scale-down') ratio = Math.min(ratio, 1);
  if (fit === 'none') ratio = 1;
  return img.naturalHeight * ratio;
}"""


def open_page(playwright, url: str, viewport: tuple[int, int]):
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("Debian's chromium is not installed")
    browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    errors = []
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    page.on("console", lambda message: errors.append(f"console: {message.text}") if message.type == "error" else None)
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#model_card", timeout=60000)
    return browser, page, errors


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name))


@pytest.mark.parametrize("viewport", [(1280, 720), (1600, 1000)])
def test_gradcam_fits_its_panel(server, viewport):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser, page, errors = open_page(playwright, server, viewport)
        page.get_by_role("tab", name="Query & occlude").click()
        page.wait_for_selector("#clean_image img", timeout=30000)
        page.get_by_text("Grad-CAM toward the matched prototype").click()
        page.locator("#explain").click()
        page.wait_for_selector("#gradcam img", timeout=60000)
        page.wait_for_function("document.querySelector('#gradcam_note').innerText.includes('cosine')")
        image = page.locator("#gradcam img")
        image.scroll_into_view_if_needed()
        box, panel = image.bounding_box(), page.locator("#gradcam").bounding_box()
        assert inside(box, panel), (box, panel)
        assert box["height"] <= 420 and box["width"] <= viewport[0]
        natural = page.evaluate("(() => { const i = document.querySelector('#gradcam img'); "
                                "return i.naturalWidth / i.naturalHeight; })()")  # fmt: skip
        assert abs(box["width"] / box["height"] - natural) < 0.05  # aspect kept
        assert "similarity" in page.inner_text("#gradcam_note")
        shot(page, f"gradcam_{viewport[0]}x{viewport[1]}.png")
        browser.close()
    assert not errors, errors


def test_map_lasso_over_the_trail_raises_no_script_error(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser, page, errors = open_page(playwright, server, (1280, 720))
        page.get_by_role("tab", name="Query & occlude").click()
        page.wait_for_selector("#clean_image img", timeout=30000)
        page.get_by_role("tab", name="Paste an occluder").click()
        page.locator("#occlude_paste").click()
        page.wait_for_function("document.querySelector('#occlusion_info').innerText.includes('pasted')")
        page.get_by_role("tab", name="Prototype space").click()
        page.locator("#umap").click()
        page.wait_for_function("document.querySelector('#umap_note').innerText.includes('UMAP')", timeout=180000)
        page.wait_for_selector("#umap_canvas .umap-plot .main-svg", timeout=30000)
        page.locator("#umap_canvas .umap-plot").scroll_into_view_if_needed()
        shot(page, "map_1280x720.png")
        trail = page.locator("#umap_canvas .scatterlayer .trace").nth(3).locator(".point").first.bounding_box()
        x, y = trail["x"] + trail["width"] / 2, trail["y"] + trail["height"] / 2
        page.mouse.move(x - 6, y - 6)  # a small lasso around the trail's clean end
        page.mouse.down()
        for dx, dy in ((6, -6), (6, 6), (-6, 6), (-6, -6)):
            page.mouse.move(x + dx, y + dy, steps=3)
        page.mouse.up()
        page.wait_for_timeout(1500)
        page.evaluate(  # a selection holding only the trail (no index) asks for nothing and says so
            "(() => { const d = document.querySelector('#umap_canvas .umap-plot');"
            " d.emit('plotly_selected', {points: [{curveNumber: 3, pointNumber: 0}]}); })()"
        )
        page.wait_for_function(
            "document.querySelector('#umap_grid_note').innerText.includes('Nothing selectable')", timeout=30000
        )
        browser.close()
    assert not errors, errors


# ----- 4. views say which query they show, and drop another query's results ----------------------------------------
def test_headers_name_the_query_occlusion_and_model_and_stale_results_go():
    from dpmpp.app.common import view_header
    from dpmpp.app.views.mask import mask_cleared
    from dpmpp.app.views.occlude import occlude_paste
    from dpmpp.app.views.picker import select_query
    from dpmpp.app.views.query import query_cleared

    checkpoint = str(DEFAULT_CHECKPOINT)
    view = select_query(checkpoint, 4)[0]
    header = view_header(checkpoint, view)
    assert view["file"] in header and "none (as given)" in header and DEFAULT_CHECKPOINT.name in header
    pasted = occlude_paste(view, "sign", 0.5, 0.5, 0.4)[0]
    assert "sign pasted" in view_header(checkpoint, pasted)
    header, bars, counts, contributions = mask_cleared(checkpoint, pasted)
    assert bars is None and contributions is None and "Show mask" in counts
    header, cams, note, steps = query_cleared(checkpoint, pasted)
    assert cams is None and steps is None  # a paste leaves no transfer steps behind
    transferred = {**pasted, "occlusion": {"method": "transfer", "partner": "x", "shift": 0}}
    assert query_cleared(checkpoint, transferred)[3] == {"__type__": "update"}  # this occlusion's steps stay


# ----- 6. rough edges -------------------------------------------------------------------------------------------------
def test_a_case_naming_a_missing_query_is_refused_clearly(tmp_path):
    import gradio as gr

    from dpmpp.app.views.cases import export_case, import_case
    from dpmpp.app.views.picker import select_query

    checkpoint = str(DEFAULT_CHECKPOINT)
    case = json.loads(Path(export_case(checkpoint, select_query(checkpoint, 2)[0], 10, True)).read_text())
    path = tmp_path / "case.json"
    path.write_text(json.dumps({**case, "query_index": 9999}))
    with pytest.raises(gr.Error, match="names query 9999, but the benchmark has 213 queries"):
        import_case(checkpoint, str(path))
    with pytest.raises(gr.Error, match="There is no query 9999"):
        select_query(checkpoint, 9999)


def test_a_refused_upload_names_the_query_that_stays_active(tmp_path):
    import gradio as gr

    from dpmpp.app.views.picker import select_query
    from dpmpp.app.views.query import upload_query

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    view = select_query(str(DEFAULT_CHECKPOINT), 3)[0]
    with pytest.raises(
        gr.Error, match=rf"not a readable image.*The query is still `{view['file']}`, person {view['pid']}\."
    ):
        upload_query(str(DEFAULT_CHECKPOINT), str(broken), view)
    with pytest.raises(gr.Error, match="No query is active yet"):
        upload_query(str(DEFAULT_CHECKPOINT), str(broken), None)


def test_views_follow_the_query_in_the_browser(server):
    """Failures is filled when it opens; a selected row opens its query, says so, and the Mask tab drops the
    previous query's plots and names the new one."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser, page, errors = open_page(playwright, server, (1280, 720))
        page.get_by_role("tab", name="Mask").click()
        page.wait_for_function("document.querySelector('#mask_header').innerText.includes('Showing')")
        page.locator("#mask").click()
        page.wait_for_function("document.querySelector('#mask_counts').innerText.includes('Active')", timeout=60000)
        first = page.inner_text("#mask_header")
        page.get_by_role("tab", name="Failures").click()
        page.wait_for_function("document.querySelectorAll('#failure_table [role=row]').length > 5", timeout=30000)
        assert "first true rank" in page.inner_text("#failure_table")  # the table's own columns, not "1 2 3"
        page.locator("#failure_table [role=row]").nth(5).click()
        page.wait_for_function(
            "document.querySelector('#failure_note').innerText.includes('opened in the Query')", timeout=30000
        )
        page.get_by_role("tab", name="Mask").click()
        page.wait_for_function("document.querySelector('#mask_counts').innerText.includes('Show mask')")
        assert page.inner_text("#mask_header") != first and "Showing" in page.inner_text("#mask_header")
        page.get_by_role("tab", name="Query & occlude").click()
        opened = page.inner_text("#query_header")
        page.locator("body").press("n")  # the next query in the list's order, from the keyboard
        page.wait_for_function(f"document.querySelector('#query_header').innerText !== {json.dumps(opened)}")
        page.locator("body").press("p")
        page.wait_for_function(f"document.querySelector('#query_header').innerText === {json.dumps(opened)}")
        browser.close()
    assert not errors, errors


def test_next_and_previous_step_through_the_queries_failures_first():
    from dpmpp.app.views.picker import next_query, previous_query, query_choices

    checkpoint = str(DEFAULT_CHECKPOINT)
    order = [index for _, index in query_choices(explorer_for(checkpoint))]
    update, view, *_ = next_query(checkpoint, None)  # no query yet: the first, the worst failure
    assert update["value"] == view["query_index"] == order[0]
    update, view, *_ = next_query(checkpoint, view)
    assert view["query_index"] == order[1]
    update, view, *_ = previous_query(checkpoint, previous_query(checkpoint, view)[1])
    assert view["query_index"] == order[-1]  # wraps around


# ----- 5. retrieval for a projector ---------------------------------------------------------------------------------
def test_retrieval_strip_has_large_crops_and_separate_labels():
    from dpmpp.app.views.picker import select_query
    from dpmpp.app.views.retrieval import retrieve
    from dpmpp.viz.rank_strip import RED, rank_strip

    checkpoint = str(DEFAULT_CHECKPOINT)
    strip = np.asarray(retrieve(checkpoint, select_query(checkpoint, 0)[0], 10, True)[0])
    tile = 128 + 2 * 4
    assert strip.shape[1] >= 11 * tile and strip.shape[0] >= 16 + 256 + 8 + 3 * 20
    caption = strip[16 + 256 + 8 :]
    rows_with_ink = (caption < 100).all(axis=2).any(axis=1)
    bands = np.flatnonzero(np.diff(rows_with_ink.astype(int)) == 1)
    assert len(bands) >= 2  # "#1" and "0.614" on lines of their own
    crop = sorted((ROOT / "assets/pets09_occ/crops/query").iterdir())[0]
    wrong = np.asarray(rank_strip(crop, [(crop, False, 0.5, "P03")], size=(128, 256)))[16 + 256 + 8 :]
    assert (np.abs(wrong.astype(int) - RED).sum(axis=2) < 30).any()  # "P03" under a wrong match, in red


def wait_for_text(page, selector: str, text: str, timeout: float = 30000) -> None:
    """Wait until the element's text contains `text`."""
    page.wait_for_function(
        "([selector, text]) => (document.querySelector(selector)?.innerText || '').includes(text)",
        arg=[selector, text],
        timeout=timeout,
    )


def open_pictured(page, gallery: str, nth: int, header: str, benchmark: str) -> int:
    """Click picture `nth` of a gallery of queries ("#123 AP 0.05"); the view's header must then name that query."""
    caption = page.locator(f"{gallery} .caption-label").nth(nth)
    number = int(re.match(r"#(\d+) AP", caption.inner_text()).group(1))
    caption.click()
    wait_for_text(page, header, f"query {number} of {benchmark}")
    return number


def test_browser_switches_to_cuhk01_picks_by_picture_and_presents(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser, page, errors = open_page(playwright, server, (1600, 1000))
        page.get_by_role("tab", name="Query & occlude").click()
        wait_for_text(page, "#query_header", "pets09_occ")
        page.locator("#benchmark input").click()
        page.get_by_role("option").filter(has_text="cuhk01_occ").click()
        wait_for_text(page, "#query_header", "of cuhk01_occ", timeout=240000)
        assert "camera A" in page.locator("#query input").input_value()
        # pick by picture: 96 pictures, failures first, and a click opens the pictured query
        page.locator("#picker").get_by_text("Pick by picture").click()
        wait_for_text(page, "#thumbnail_note", "972 queries")
        page.wait_for_function("document.querySelectorAll('#thumbnails .caption-label').length === 96")
        open_pictured(page, "#thumbnails", 5, "#query_header", "cuhk01_occ")
        drawn = lambda: page.evaluate(DRAWN_HEIGHT, "#clean_image img")  # noqa: E731
        before_height = drawn()
        shot(page, "cuhk01_picker.png")
        # presenter mode: larger explanations (cut to two lines) and a larger query
        size = lambda: page.evaluate(  # noqa: E731
            "parseFloat(getComputedStyle(document.querySelector('.explain p')).fontSize)"
        )
        before = size()
        page.locator("#presenter input").check()
        page.wait_for_function("document.body.classList.contains('presenter')")
        assert size() >= before * 1.15
        assert drawn() > before_height * 1.4
        shot(page, "cuhk01_presenter.png")
        page.locator("#presenter input").uncheck()
        page.get_by_text("figures download as PNG").click()
        page.wait_for_function("window.dpmppFigureFormat === 'png'")
        # the failure table against model B, on the same benchmark
        page.get_by_role("tab", name="Failures").click()
        page.locator("#failures_b input").click()
        page.get_by_role("option").filter(has_text="HSV").click()
        page.locator("#failures").click()
        wait_for_text(page, "#failure_note", "A right, B wrong", timeout=240000)
        note = page.locator("#failure_note").inner_text()
        counts = [int(n) for n in re.findall(r"(?:right|wrong) (\d+)", note)]
        assert note.startswith("cuhk01_occ") and sum(counts) == 972
        # the table's first rows as pictures: a click opens that query
        open_pictured(page, "#failure_pictures", 0, "#failures_header", "cuhk01_occ")
        browser.close()
    assert errors == []
