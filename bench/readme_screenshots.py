"""Regenerate the README's app screenshots from the bundled model.

    python bench/readme_screenshots.py [--out assets/readme]

Starts `python app.py` on a free local port with the bundled default checkpoint (dpmpp.paths.DEFAULT_CHECKPOINT),
drives the page in Chromium through Playwright (viewport 1280 wide) and writes five full-page screenshots:

- app_transfer.png: Query & occlude tab, the first benchmark query (failures first) after a patch transfer, with
  the query saliency, the partner's silhouette, both person masks and the transferred result;
- app_retrieval.png: Retrieval tab, the same query as given and with a pasted sign, ranked side by side;
- app_mask.png: Mask tab, the clean and occluded masks over the prototype dimensions and the contributions plot;
- app_umap.png: Prototype space tab, the UMAP map with one point hovered and clicked, and its nearest neighbours;
- app_cuhk01_picker.png: Query & occlude tab on cuhk01_occ, the picture picker (failures first) and a query opened
  from it.

Needs Debian's chromium (`apt-get install chromium`, used from /usr/bin/chromium) and the playwright package. Each
PNG is written to a temporary file in the output folder and then renamed over the old one. The app is stopped at the
end, also when a step fails.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.request import urlopen

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a script in bench/: the project root is not on the path by itself

from dpmpp.atomic import atomic_path  # noqa: E402
from dpmpp.paths import DEFAULT_CHECKPOINT  # noqa: E402

CHECKPOINT = DEFAULT_CHECKPOINT
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
STEP_TIMEOUT_MS = 300_000  # one app step (transfer, retrieval, mask) on a busy 2-core CPU
UMAP_TIMEOUT_MS = 600_000  # the UMAP fit runs once per server, in a background thread started at launch

# True when every image shown on the page has finished loading.
IMAGES_LOADED = """() => Array.from(document.images)
    .filter((img) => img.getClientRects().length > 0)
    .every((img) => img.complete && img.naturalWidth > 0)"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(port: int, log) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--checkpoint", str(CHECKPOINT)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "0"}
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_until_serving(url: str, process: subprocess.Popen, log, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urlopen(url, timeout=2):
                return
        except OSError:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"app.py exited with {process.returncode}:\n{log.read().decode()[-3000:]}") from None
            time.sleep(1)
    raise TimeoutError(f"app.py did not answer at {url} within {timeout_s:.0f} s")


def stop_app(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def save_screenshot(page: Page, path: Path) -> None:
    """Full-page screenshot, written next to `path` first and then renamed over it."""
    page.wait_for_function(IMAGES_LOADED, timeout=STEP_TIMEOUT_MS)
    page.wait_for_timeout(500)  # let transitions and plot resizes settle
    with atomic_path(path) as temporary:
        page.screenshot(path=str(temporary), type="png", full_page=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} kB)")


def open_tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def text_contains(selector: str, text: str) -> str:
    """A page function: true once the element's text contains `text`."""
    return f"(document.querySelector({selector!r})?.innerText || '').includes({text!r})"


def visible_src(selector: str) -> str:
    """A page expression: the src of the element's image, or '' when it has none."""
    return f"document.querySelector({selector!r})?.src || ''"


def shoot_transfer(page: Page, out: Path) -> None:
    open_tab(page, "Query & occlude")
    page.wait_for_selector("#clean_image img", timeout=STEP_TIMEOUT_MS)
    print(f"query: {page.input_value('#query input')}")
    open_tab(page, "Patch transfer")
    page.locator("#occlude_transfer").click()
    page.wait_for_function(text_contains("#occlusion_info", "occlusion-aware IoU"), timeout=STEP_TIMEOUT_MS)
    page.get_by_text("transferred result").first.wait_for(timeout=STEP_TIMEOUT_MS)
    save_screenshot(page, out / "app_transfer.png")


def shoot_retrieval(page: Page, out: Path) -> None:
    """Paste the default occluder (a sign), then show both ranked rows."""
    strip = "#occluded_strip img"
    open_tab(page, "Retrieval")
    page.wait_for_selector(strip, timeout=STEP_TIMEOUT_MS)  # the patch-transferred query's row
    before = page.evaluate(visible_src(strip))
    open_tab(page, "Query & occlude")
    open_tab(page, "Paste an occluder")
    page.locator("#occlude_paste").click()
    page.wait_for_function(text_contains("#occlusion_info", "pasted"), timeout=STEP_TIMEOUT_MS)
    open_tab(page, "Retrieval")
    page.wait_for_function(f"{visible_src(strip)} && {visible_src(strip)} !== {before!r}", timeout=STEP_TIMEOUT_MS)
    page.wait_for_function(text_contains("#summary", "with synthetic occlusion"), timeout=STEP_TIMEOUT_MS)
    save_screenshot(page, out / "app_retrieval.png")


def shoot_mask(page: Page, out: Path) -> None:
    open_tab(page, "Mask")
    page.locator("#mask").click()
    page.wait_for_function(text_contains("#mask_counts", "occluded"), timeout=STEP_TIMEOUT_MS)
    page.wait_for_function(  # the mask bars and the contributions, drawn by plotly.js
        "Array.from(document.querySelectorAll('.js-plotly-plot')).filter((p) => p.getClientRects().length).length >= 2",
        timeout=STEP_TIMEOUT_MS,
    )
    save_screenshot(page, out / "app_mask.png")


def shoot_umap(page: Page, out: Path, point: int = 300) -> None:
    """Draw the map, hover and click one gallery point, wait for its nearest neighbours."""
    open_tab(page, "Prototype space")
    started = time.monotonic()
    page.locator("#umap").click()
    page.wait_for_function(text_contains("#umap_note", "UMAP"), timeout=UMAP_TIMEOUT_MS)
    page.wait_for_selector("#umap_canvas .umap-plot .main-svg", timeout=STEP_TIMEOUT_MS)
    print(f"UMAP drawn after {time.monotonic() - started:.0f} s")
    box = page.locator("#umap_canvas .point").nth(point).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.wait_for_selector("#umap_canvas .umap-thumb img", timeout=STEP_TIMEOUT_MS)
    page.mouse.click(x, y)
    page.wait_for_function(text_contains("#umap_grid_note", "Nearest"), timeout=STEP_TIMEOUT_MS)
    page.wait_for_selector("#umap_grid img", timeout=STEP_TIMEOUT_MS)
    page.mouse.move(x, y + 1)  # keep the hover label and crop on the clicked point
    save_screenshot(page, out / "app_umap.png")


def shoot_cuhk01(page: Page, out: Path) -> None:
    """Switch to cuhk01_occ, open the picture picker, open a pictured failure and rank it with A and B."""
    open_tab(page, "Query & occlude")
    page.locator("#benchmark input").click()
    page.get_by_role("option").filter(has_text="cuhk01_occ").click()
    page.wait_for_function(text_contains("#query_header", "of cuhk01_occ"), timeout=UMAP_TIMEOUT_MS)
    page.locator("#picker").get_by_text("Pick by picture").click()
    page.wait_for_function(text_contains("#thumbnail_note", "972 queries"), timeout=STEP_TIMEOUT_MS)
    page.locator("#thumbnails .caption-label").nth(2).click()
    page.wait_for_selector("#thumbnails img", timeout=STEP_TIMEOUT_MS)
    page.wait_for_timeout(1500)
    save_screenshot(page, out / "app_cuhk01_picker.png")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "assets" / "readme"), help="folder for the five PNGs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryFile() as log:
        process = start_app(port, log)
        try:
            wait_until_serving(url, process, log)
            print(f"app serving at {url} after {time.monotonic() - started:.0f} s")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport=VIEWPORT)
                    page.goto(url, wait_until="domcontentloaded")
                    page.wait_for_selector("#model_card", timeout=STEP_TIMEOUT_MS)
                    shoot_transfer(page, out)
                    shoot_retrieval(page, out)
                    shoot_mask(page, out)
                    shoot_umap(page, out)
                    shoot_cuhk01(page, out)
                finally:
                    browser.close()
        finally:
            stop_app(process)
    print(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
