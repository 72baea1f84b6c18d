"""The app shared by a class: uploads checked before decoding, bounded state, disk and training, teacher-only powers,
and messages without server paths. Handlers are called directly; one launched server checks the wiring."""

import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image, ImageFile

import app
from dpmpp.api import CHECKPOINT_FILES
from dpmpp.app import classroom as roles
from dpmpp.app import guards, state
from dpmpp.app.classroom import expire_idle_sessions, teacher_login
from dpmpp.app.common import MESSAGE_CHARS, SETTINGS, public
from dpmpp.app.layout import build_demo
from dpmpp.app.page_cache import PageCache
from dpmpp.app.state import TRAINING_RESERVE_MB, explorer_for
from dpmpp.app.views.cases import EXPORTS, export_case
from dpmpp.app.views.model import load_model, start_training, stop_training, upload_checkpoint
from dpmpp.app.views.occlude import occlude_paint
from dpmpp.app.views.picker import select_query
from dpmpp.app.views.query import upload_query
from dpmpp.app.views.space import umap_select, umap_view
from dpmpp.app.widgets import UPLOAD_SIDE, CheckedImage, CheckedImageEditor
from dpmpp.jobs import TrainingJobs
from dpmpp.paths import DEFAULT_CHECKPOINT, PETS09_CHECKPOINT
from tests.test_app import free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = str(DEFAULT_CHECKPOINT)
TOKEN = "teacher-token-for-tests"


def request(session: str, teacher_token: str | None = None):
    return gr.Request(session_hash=session, query_params={"teacher": teacher_token} if teacher_token else {})


@pytest.fixture
def no_decoding(monkeypatch):
    """Any pixel decoding fails the test: what is refused must be refused from the header."""

    def decode(self, *args, **kwargs):
        raise AssertionError(f"decoded a {self.size} image that should have been refused from its header")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)


@pytest.fixture
def classroom(monkeypatch, tmp_path):
    """Classroom mode over a checkpoint folder holding a copy of the bundled model."""
    folder = tmp_path / "checkpoints"
    shutil.copytree(DEFAULT_CHECKPOINT, folder / DEFAULT_CHECKPOINT.name)
    monkeypatch.setitem(SETTINGS, "checkpoint_dir", folder)
    monkeypatch.setitem(SETTINGS, "classroom", True)
    monkeypatch.setitem(SETTINGS, "teacher_token", TOKEN)
    monkeypatch.setattr(roles, "TEACHER_SESSIONS", set())
    return folder


def png(path: Path, size: tuple[int, int], mode: str = "RGB") -> Path:
    Image.new(mode, size).save(path, optimize=True)
    return path


# ----- images -----------------------------------------------------------------------------------------------------
def test_an_elongated_upload_is_refused_before_decoding(tmp_path, no_decoding):
    strip = png(tmp_path / "strip.png", (40000, 8))  # 1 kB; enlarged to 256 rows it was a 1,280,000x256 image
    assert strip.stat().st_size < 2000
    with pytest.raises(gr.Error, match="longer side is at most 8 times") as caught:
        upload_query(CHECKPOINT, str(strip))
    assert str(tmp_path) not in str(caught.value)
    with pytest.raises(gr.Error, match="larger than the limit"):
        upload_query(CHECKPOINT, str(png(tmp_path / "huge.png", (5000, 5000), "L")))


def test_an_upload_is_kept_scaled_down(tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (1500, 3000), (90, 40, 40)).save(photo, quality=90)
    view, shown, _, _ = upload_query(CHECKPOINT, str(photo))
    assert max(view["clean"].shape[:2]) <= UPLOAD_SIDE and view["clean"].shape[:2] == (512, 256)
    assert shown.size == (128, 256)


def test_the_upload_widgets_check_headers_before_the_framework_decodes(tmp_path, no_decoding):
    from gradio.data_classes import FileData

    image = CheckedImage(type="filepath", image_mode=None)
    with pytest.raises(gr.Error, match="longer side"):
        image.preprocess(FileData(path=str(png(tmp_path / "strip.png", (40000, 8)))))
    crop = png(tmp_path / "crop.png", (64, 128))
    assert image.preprocess(FileData(path=str(crop), orig_name="crop.png")) == str(crop)  # the handler decodes
    editor = CheckedImageEditor(type="pil")
    layer = FileData(path=str(crop))
    with pytest.raises(gr.Error, match="At most 8 paint layers"):
        editor.preprocess(gr.components.image_editor.EditorData(layers=[layer] * 9))
    big = FileData(path=str(png(tmp_path / "big.png", (1100, 1100), "RGBA")))
    with pytest.raises(gr.Error, match="larger than the limit of 1048576"):
        editor.preprocess(gr.components.image_editor.EditorData(layers=[layer, big]))


def test_layer_uploads_for_the_editor_are_bounded(tmp_path):
    from gradio.components.image_editor import AcceptBlobs

    editor = CheckedImageEditor(type="pil")
    small = png(tmp_path / "s.png", (64, 128), "RGBA").read_bytes()

    def blob(editor_id, index, data=small):
        fields = {"type": "layer", "index": index, "id": editor_id, "file": b""}
        return AcceptBlobs(data=fields, files=[("blob", data)])

    with pytest.raises(gr.Error, match="At most 8 paint layers"):
        editor.accept_blobs(blob("a", 10**9))  # the framework alone extended a list to 10**9 entries
    with pytest.raises(gr.Error, match="larger than the limit"):
        editor.accept_blobs(blob("a", 0, png(tmp_path / "big.png", (1100, 1100), "RGBA").read_bytes()))
    for i in range(200):
        editor.accept_blobs(blob(f"editor{i}", 0))
    assert len(editor.blob_storage) == editor.MAX_PENDING


def test_paint_layers_are_counted_and_sized(tmp_path):
    view = select_query(CHECKPOINT, 0)[0]
    layer = np.zeros((256, 128, 4), np.uint8)
    layer[:128, :, 3] = 255
    with pytest.raises(gr.Error, match="At most 8 paint layers"):
        occlude_paint(view, {"layers": [layer] * 9}, "grey")
    with pytest.raises(gr.Error, match="larger than the limit"):
        occlude_paint(view, {"layers": [str(png(tmp_path / "big.png", (1100, 1100), "RGBA"))]}, "grey")
    with pytest.raises(gr.Error, match="Unknown fill"):
        occlude_paint(view, {"layers": [layer]}, "x" * 10_000)
    _, _, info = occlude_paint(view, {"layers": [layer]}, "grey")
    assert "Painted 50%" in info


# ----- checkpoints: one cache entry per folder, one answer for unknown and forbidden ones -----------------------------
def test_spellings_of_one_folder_share_one_cache_entry():
    key, _, _ = load_model(CHECKPOINT)
    before = explorer_for.cache_info()
    for spelling in (
        CHECKPOINT + "/",
        "/" + CHECKPOINT,
        CHECKPOINT + "/.",
        CHECKPOINT + "/../" + Path(CHECKPOINT).name,
    ):
        assert load_model(spelling)[0] == key
    after = explorer_for.cache_info()
    assert after.misses == before.misses and after.currsize == before.currsize


def test_unknown_and_unreadable_folders_get_one_answer_without_server_paths(tmp_path):
    (tmp_path / "a" / ".ssh").mkdir(parents=True)
    (tmp_path / "a" / ".ssh" / "id_rsa").write_text("secret")
    messages = []
    for folder in (tmp_path / "a" / ".ssh", tmp_path / "b" / ".ssh"):
        with pytest.raises(gr.Error) as caught:
            load_model(str(folder))
        messages.append(str(caught.value))
    assert messages[0] == messages[1] and str(tmp_path) not in messages[0]
    with pytest.raises(gr.Error) as caught:
        load_model("/" + "x" * 10_000_000)
    assert len(str(caught.value)) <= MESSAGE_CHARS + 1


def test_public_messages_keep_file_names_only():
    text = "Could not load /srv/class/ckpt/run: /tmp/gradio/ab12/config.json: not a dpmpp config (ratio 1/2)"
    assert public(text) == "Could not load run: config.json: not a dpmpp config (ratio 1/2)"
    assert len(public("y" * 100_000)) == MESSAGE_CHARS + 1


def test_students_load_only_listed_checkpoints(classroom, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(DEFAULT_CHECKPOINT, outside)
    student = request("student")
    listed = str(classroom / DEFAULT_CHECKPOINT.name)
    assert load_model(listed, request=student)[0] == listed
    answers = []
    for folder in (outside, tmp_path / "absent", Path("/etc")):
        with pytest.raises(gr.Error, match="not one of the listed checkpoints") as caught:
            load_model(str(folder), request=student)
        answers.append(str(caught.value).replace(folder.name, "NAME"))
    assert len(set(answers)) == 1 and str(tmp_path) not in answers[0]
    assert load_model(str(outside), request=request("teacher", TOKEN))[0] == str(outside)


def test_only_the_teacher_uploads_checkpoints_or_trains_in_classroom_mode(classroom):
    files = [str(DEFAULT_CHECKPOINT / name) for name in CHECKPOINT_FILES]
    student = request("student")
    with pytest.raises(gr.Error, match="only the teacher can upload checkpoints"):
        upload_checkpoint(files, "mine", student)
    with pytest.raises(gr.Error, match="only the teacher can start trainings"):
        start_training("pets09_occ", "", "tiny", 1, "mine", [], student)
    with pytest.raises(gr.Error, match="not the teacher token"):
        teacher_login("guess", student)
    note, _ = teacher_login(TOKEN, student)
    assert "teacher" in note
    with pytest.raises(gr.Error, match=f"already listed as {DEFAULT_CHECKPOINT.name}"):
        upload_checkpoint(files, "mine", student)  # the same weights under a new name
    assert not (classroom / "mine").exists()


def test_checkpoint_folder_quota_stops_uploads_and_trainings(classroom, monkeypatch):
    files = [str(DEFAULT_CHECKPOINT / name) for name in CHECKPOINT_FILES]
    size_mb = sum(Path(f).stat().st_size for f in files) / 2**20
    quota = math.ceil(1.5 * size_mb)  # room for the bundled copy, not for a training's reserve
    assert quota - size_mb < TRAINING_RESERVE_MB
    monkeypatch.setitem(SETTINGS, "checkpoint_quota_mb", quota)
    with pytest.raises(gr.Error, match="quota"):
        start_training("pets09_occ", "", "tiny", 1, "run", [])
    shutil.rmtree(classroom / DEFAULT_CHECKPOINT.name)
    upload_checkpoint(files, "first")
    other = [str(PETS09_CHECKPOINT / name) for name in CHECKPOINT_FILES]  # other weights, larger than the room left
    with pytest.raises(gr.Error, match="quota"):
        upload_checkpoint(other, "second")
    assert not (classroom / "second").exists()


# ----- training control -------------------------------------------------------------------------------------------
@pytest.fixture
def endless_training(monkeypatch, tmp_path):
    """A training that runs until it is told to stop."""
    monkeypatch.setattr(state, "JOBS", TrainingJobs("tests.training_fakes:endless"))
    monkeypatch.setitem(SETTINGS, "checkpoint_dir", tmp_path)
    monkeypatch.setitem(SETTINGS, "teacher_token", TOKEN)
    yield state.JOBS
    state.JOBS.stop()
    state.JOBS.wait()


def test_only_the_owner_or_the_teacher_stops_a_training(endless_training):
    owner, other = request("owner"), request("other")
    assert "running" in start_training("pets09_occ", "", "tiny", 1, "run", [], owner)
    with pytest.raises(gr.Error, match="started in another session"):
        stop_training(other)
    assert endless_training.status().state == "running"
    assert "stopping" in stop_training(request("teacher", TOKEN))
    assert endless_training.wait().state == "stopped"
    assert "running" in start_training("pets09_occ", "", "tiny", 1, "run2", [], owner)
    assert "stopping" in stop_training(owner)


@pytest.mark.parametrize("epochs", [-5, 0, 10**9, 2.5, None, float("nan")])
def test_training_epochs_are_bounded(endless_training, epochs):
    with pytest.raises(gr.Error, match="epochs must be a whole number from 1 to 200"):
        start_training("pets09_occ", "", "tiny", epochs, "run", [])
    assert endless_training.status().state == "idle"


def test_presets_are_named_not_paths(endless_training, tmp_path):
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(gr.Error, match="unknown preset"):
        start_training("pets09_occ", "", str(tmp_path / "p.json"), 1, "run", [])


# ----- sessions and temporary files -------------------------------------------------------------------------------
def test_idle_sessions_are_dropped_with_their_images(monkeypatch):
    from gradio.state_holder import StateHolder

    demo = build_demo(CHECKPOINT)
    holder = StateHolder()
    holder.set_blocks(demo)
    view = next(block for block in demo.blocks.values() if isinstance(block, gr.State) and block.value is None)
    for session in ("idle", "active"):
        holder[session][view._id] = {"clean": np.zeros((512, 256, 3), np.uint8)}
    holder.time_last_used["idle"] -= datetime.timedelta(minutes=31)
    monkeypatch.setattr(roles, "TEACHER_SESSIONS", {"idle", "active"})
    assert expire_idle_sessions(holder, 30 * 60) == ["idle"]
    assert "idle" not in holder and "active" in holder and roles.TEACHER_SESSIONS == {"active"}
    assert holder["idle"].get(view._id) is None  # a returning visitor starts again from the default view


def test_case_exports_leave_no_folders_behind(monkeypatch):
    monkeypatch.setitem(EXPORTS, "folder", None)
    monkeypatch.setitem(EXPORTS, "age_s", 0.0)  # every earlier export is old enough to go
    before = {p.name for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith("dpmpp_case")}
    view = select_query(CHECKPOINT, 0)[0]
    paths = [Path(export_case(CHECKPOINT, view, 10, True)) for _ in range(3)]
    assert json.loads(paths[-1].read_text())["query_index"] == 0
    assert not paths[0].exists() and list(Path(EXPORTS["folder"]).iterdir()) == [paths[-1].parent]
    after = {p.name for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith("dpmpp_case")}
    assert after - before == {Path(EXPORTS["folder"]).name}  # one folder for all exports
    shutil.rmtree(EXPORTS["folder"])


def test_umap_selection_of_points_is_bounded():
    canvas, _ = umap_view(CHECKPOINT, None, "identity")
    grid, note = umap_select(CHECKPOINT, {**canvas, "event": {"type": "select", "points": [-1, 10**9, 3] * 10**5}})
    assert note.startswith("1 points selected") and len(grid) <= 1  # only in-range rows count, each once
    with pytest.raises(gr.Error, match="Click a point"):
        umap_select(CHECKPOINT, {**canvas, "event": {"type": "click", "point": 10**9}})


# ----- launch ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, classroom",
    [
        (["--host", "0.0.0.0"], True),
        (["--host", "0.0.0.0", "--no-classroom"], False),
        ([], False),
        (["--classroom"], True),
    ],
)
def test_launch_defaults(monkeypatch, argv, classroom):
    launched = {}

    def queue(self, **kwargs):
        launched["queue"] = kwargs
        return self

    monkeypatch.setattr(gr.Blocks, "queue", queue)
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: launched.update(launch=kwargs, demo=self))
    monkeypatch.setattr(app, "warm_up", lambda checkpoint: None)
    monkeypatch.setattr(app, "expire_sessions_forever", lambda demo: None)
    for key, value in list(SETTINGS.items()):  # main() sets them from the flags; the next test gets them back
        monkeypatch.setitem(SETTINGS, key, value)
    app.main(argv)
    assert SETTINGS["classroom"] is classroom
    assert launched["launch"]["show_error"] is False and launched["demo"].analytics_enabled is False
    assert launched["queue"] == {"max_size": 64, "default_concurrency_limit": 4}
    middleware = [m.cls for m in launched["launch"]["app_kwargs"]["middleware"]]
    assert middleware == [PageCache, guards.BusyMessage, guards.RateLimit, guards.UploadQuota]


# ----- a launched server in classroom mode -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classroom_server(tmp_path_factory):
    checkpoints = tmp_path_factory.mktemp("class_checkpoints")
    shutil.copytree(DEFAULT_CHECKPOINT, checkpoints / DEFAULT_CHECKPOINT.name)
    port, log = free_port(), checkpoints.parent / "classroom_server.log"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--checkpoint-dir", str(checkpoints)]
        + ["--checkpoint", str(checkpoints / DEFAULT_CHECKPOINT.name), "--classroom", "--upload-quota-mb", "1"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env={**os.environ, "DPMPP_TEACHER_TOKEN": TOKEN},
    )
    url = f"http://127.0.0.1:{port}/"
    wait_until_up(url, process, log.read_text)
    yield url, checkpoints
    process.terminate()
    process.wait(timeout=30)


def join(url: str, body: dict) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url + "gradio_api/queue/join", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        return urllib.request.urlopen(request, timeout=60).status
    except urllib.error.HTTPError as error:
        return error.code


def upload(url: str, data: bytes, name: str = "x.bin") -> int:
    import urllib.request
    import uuid

    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    req = urllib.request.Request(f"{url}gradio_api/upload", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_classroom_server_keeps_powers_for_the_teacher(classroom_server, tmp_path):
    from gradio_client import Client, handle_file

    url, checkpoints = classroom_server
    student = Client(url, verbose=False, httpx_kwargs={"timeout": 120})
    with pytest.raises(Exception, match="only the teacher can start trainings"):
        student.predict("pets09_occ", "", "tiny", 1, "mine", [], api_name="/train")
    with pytest.raises(Exception, match="not one of the listed checkpoints"):
        student.predict("/root/.ssh", api_name="/load_model")
    strip = png(tmp_path / "strip.png", (40000, 8))
    with pytest.raises(Exception, match="longer side is at most 8 times"):
        student.predict(handle_file(str(strip)), api_name="/upload_query")
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (600, 1200), (90, 40, 40)).save(photo)
    shown, _, info = student.predict(handle_file(str(photo)), api_name="/upload_query")
    assert "identity unknown" in info and Image.open(shown).size == (128, 256)
    teacher = Client(url, verbose=False, httpx_kwargs={"timeout": 120})
    note, _ = teacher.predict(TOKEN, api_name="/teacher_login")
    assert "teacher" in note
    outside = tmp_path / "outside"
    shutil.copytree(DEFAULT_CHECKPOINT, outside)
    card, _ = teacher.predict(str(outside), api_name="/load_model")
    assert "pets09_occ" in card


def test_classroom_server_refuses_uploads_over_the_quota(classroom_server):
    url, _ = classroom_server
    statuses = [upload(url, os.urandom(400_000)) for _ in range(4)]  # the quota is 1 MB
    assert statuses[:2] == [200, 200] and statuses[-1] == 507
    inline = {"fn_index": 0, "session_hash": "inline", "data": ["data:image/png;base64," + "A" * 300_000]}
    small = {"fn_index": 0, "session_hash": "small", "data": [None]}
    assert join(url, inline) == 507  # a base64 image inside a queue request counts as an upload
    assert join(url, small) != 507  # ordinary clicks go on


def test_teacher_url_unlocks_the_page(classroom_server):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("Debian's chromium is not installed (.ci/run installs it with apt)")
    url, _ = classroom_server
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        notes = {}
        for who, address, expected in (
            ("student", url, "Classroom mode:"),
            ("teacher", f"{url}?teacher={TOKEN}", "Classroom mode, teacher"),  # set by the page's load event
        ):
            page = browser.new_page()
            page.goto(address, wait_until="domcontentloaded")
            page.wait_for_function(
                f"(document.querySelector('#role_note') || {{innerText: ''}}).innerText.includes({expected!r})",
                timeout=60000,
            )
            notes[who] = page.inner_text("#role_note")
        browser.close()
    assert "teacher" not in notes["student"].split(":")[0] and "teacher" in notes["teacher"].split(":")[0]
