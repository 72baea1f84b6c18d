"""Bad input and faults: each gets a clear, typed error; nothing saved is lost; nothing unexpected is executed."""

import io
import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dpmpp.api import Pipeline
from dpmpp.data.images import ImageLoadError, load_image
from dpmpp.engine.checkpoint import CheckpointError
from dpmpp.paths import DEFAULT_CHECKPOINT


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pipeline():
    return Pipeline.from_checkpoint(DEFAULT_CHECKPOINT, device="cpu")


def test_bad_images_get_typed_errors_and_the_pipeline_keeps_working(pipeline, tmp_path):
    person = Image.new("RGB", (40, 100), (120, 30, 30))
    jpeg = encoded(person, "JPEG")
    cases = {
        "text file": b"this is not an image",
        "truncated JPEG": jpeg[: len(jpeg) // 2],
        "empty file": b"",
    }
    for name, data in cases.items():
        with pytest.raises(ImageLoadError, match="not a readable image|no such"):
            pipeline.embed([data]), name
    with pytest.raises(ImageLoadError, match="at least"):
        pipeline.embed([Image.new("RGB", (1, 1))])
    huge = tmp_path / "huge.png"
    Image.new("L", (12000, 12000)).save(huge)  # 144 megapixels, refused before decoding
    with pytest.raises(ImageLoadError, match="larger than the limit"):
        pipeline.embed([huge])
    # Odd but valid encodings are converted, and the same session still works afterwards.
    odd = [
        person.convert("L"),
        person.convert("RGBA"),
        person.convert("CMYK"),
        Image.fromarray((np.asarray(person.convert("L"), np.uint16) * 257)),
        encoded(person, "PNG"),
        encoded(person.convert("CMYK"), "JPEG"),
    ]
    embedded = pipeline.embed(odd)
    assert embedded.features.shape == (len(odd), pipeline.model.embed_dim) and np.isfinite(embedded.features).all()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_fuzz_image_loader_raises_only_image_load_error(data):
    try:
        image = load_image(data)
    except ImageLoadError:
        return
    assert image.mode == "RGB"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(weights=st.binary(max_size=2048), config=st.one_of(st.binary(max_size=512), st.just(None)))
def test_fuzz_checkpoint_loader_raises_only_checkpoint_error(tmp_path_factory, weights, config):
    folder = tmp_path_factory.mktemp("fuzzed")
    shutil.copyfile(DEFAULT_CHECKPOINT / "config.json", folder / "config.json")
    if config is not None:
        (folder / "config.json").write_bytes(config)
    (folder / "model.safetensors").write_bytes(weights)
    with pytest.raises(CheckpointError):
        Pipeline.from_checkpoint(folder, device="cpu")


@pytest.mark.parametrize("text", ["1", "[]", '"meta"', '{"meta": 3}', '{"meta": {}, "data": 5}', '{"data": {}}'])
def test_config_json_of_the_wrong_shape_is_a_checkpoint_error(tmp_path, text):
    folder = tmp_path / "odd"
    shutil.copytree(DEFAULT_CHECKPOINT, folder)
    (folder / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match="not a dpmpp config"):
        Pipeline.from_checkpoint(folder, device="cpu")


def test_app_keeps_its_model_when_a_checkpoint_is_bad(tmp_path):
    import gradio as gr

    from dpmpp.app.views.model import load_model

    good = str(DEFAULT_CHECKPOINT)
    bad = tmp_path / "bad"
    shutil.copytree(DEFAULT_CHECKPOINT, bad)
    config = json.loads((bad / "config.json").read_text())
    config["meta"]["num_classes"] = 3
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(gr.Error, match="previous model stays active"):
        load_model(str(bad))
    model, card, _ = load_model(good)
    assert model == good and "pets09_occ" in card


def test_uploading_a_non_image_as_query_says_what_was_expected():
    import gradio as gr

    from dpmpp.app.views.query import upload_query

    with pytest.raises(gr.Error, match="JPEG, PNG"):
        upload_query(str(DEFAULT_CHECKPOINT), b"%PDF-1.4 not a person crop")


def test_dataset_faults_name_the_problem(tmp_path):
    from dpmpp.data.dataset import ImageDataset
    from dpmpp.data.datasets import DatasetLayoutError, load_split
    from dpmpp.data.records import ReIDRecord
    from dpmpp.data.transforms import build_transforms

    (tmp_path / "a.jpg").write_bytes(b"not really a jpeg")
    (tmp_path / "manifest.csv").write_text("path,pid,camid,split\na.jpg,1,0,train\n")
    with pytest.raises(DatasetLayoutError, match="non-empty"):
        load_split("manifest", tmp_path)  # a split with no query or gallery
    dataset = ImageDataset([ReIDRecord(str(tmp_path / "a.jpg"), 1, 0)], build_transforms(64, 32, train=False))
    with pytest.raises(ImageLoadError, match="a.jpg"):
        dataset[0]  # an unreadable file names itself


def test_the_apps_shared_cache_computes_a_key_once_under_concurrent_first_calls():
    import threading
    import time

    from dpmpp.caching import shared_cache

    calls = []

    @shared_cache(maxsize=4)
    def slow_fit(key):
        calls.append(key)
        time.sleep(0.2)  # long enough that every thread below misses the cache together
        return object()

    results = {}
    threads = [threading.Thread(target=lambda i=i: results.update({i: slow_fit("model")})) for i in range(4)]
    threads.append(threading.Thread(target=lambda: results.update({"other": slow_fit("other")})))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(calls) == ["model", "other"]  # functools.lru_cache alone computes "model" four times
    assert len({id(results[i]) for i in range(4)}) == 1 and results["other"] is not results[0]


def test_atomic_writes_keep_the_permissions_a_plain_write_gives(tmp_path):
    import os
    import stat

    from dpmpp.atomic import write_text

    old = os.umask(0o022)
    try:
        fresh = tmp_path / "metrics.json"
        write_text(fresh, "{}")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644  # not mkstemp's owner-only 0o600
        private = tmp_path / "secret.json"
        private.write_text("old")
        private.chmod(0o600)
        write_text(private, "new")
        assert stat.S_IMODE(private.stat().st_mode) == 0o600 and private.read_text() == "new"
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def edited_checkpoint(tmp_path, name="edited", **changes):
    """A copy of the bundled checkpoint whose config.json has `changes` applied ("meta.num_classes": 7, ...)."""
    folder = tmp_path / name
    shutil.copytree(DEFAULT_CHECKPOINT, folder)
    config = json.loads((folder / "config.json").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        config[section][key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def write_safetensors_header(path, tensors: dict, data_bytes: int) -> None:
    """A safetensors file with this header and `data_bytes` of (sparse) zeros after it."""
    header = json.dumps(tensors).encode()
    with open(path, "wb") as handle:
        handle.write(len(header).to_bytes(8, "little") + header)
        handle.truncate(8 + len(header) + data_bytes)  # a hole: no disk is used


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"meta__num_classes": 2_000_000}, "num_classes must be a whole number from 0 to 20000"),
        ({"model__clip_model": "ViT-bigG-14"}, "clip_model must be one of"),
        ({"model__backbone": "resnet1000"}, "backbone must be one of"),
        ({"meta__image_size": [4096, 4096]}, r"image_size must be \[height, width\], each side 16 to 512"),
        ({"model__mask_hidden": 1_000_000}, "mask_hidden must be a whole number from 1 to 4096"),
        ({"meta__num_classes": 7}, "weights do not match config.json"),
    ],
)
def test_checkpoint_configs_are_checked_before_any_model_is_built(tmp_path, monkeypatch, changes, expected):
    import dpmpp.api

    def never(*args, **kwargs):
        raise AssertionError("a model was built from a config that should have been refused")

    monkeypatch.setattr(dpmpp.api, "build_model", never)
    folder = edited_checkpoint(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=expected) as caught:
        Pipeline.from_checkpoint(folder, device="cpu")
    assert str(tmp_path) not in str(caught.value)  # the folder is named, its server path is not


def test_weight_headers_over_the_limits_are_refused_from_the_header_alone(tmp_path):
    from dpmpp.engine.checkpoint import read_config

    folder = edited_checkpoint(tmp_path)
    huge = {"prototypes": {"dtype": "F32", "shape": [10, 256], "data_offsets": [0, 10240]}}
    huge["blob"] = {"dtype": "F32", "shape": [300_000_000], "data_offsets": [10240, 10240 + 1_200_000_000]}
    write_safetensors_header(folder / "model.safetensors", huge, 10240 + 1_200_000_000)
    with pytest.raises(CheckpointError, match="more than 1024 MB"):
        read_config(folder)
    many = {f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(5000)}
    write_safetensors_header(folder / "model.safetensors", many, 5000)
    with pytest.raises(CheckpointError, match="5000 tensors declared; at most 4096"):
        read_config(folder)
    wrong = {"text_prototypes": {"dtype": "F32", "shape": [3, 256], "data_offsets": [0, 3072]}}
    shutil.copyfile(DEFAULT_CHECKPOINT / "model.safetensors", folder / "model.safetensors")
    write_safetensors_header(folder / "text_prototypes.safetensors", wrong, 3072)
    classes = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())["meta"]["num_classes"]
    with pytest.raises(CheckpointError, match=rf"text_prototypes of shape \[3, 256\], expected \[{classes}, dim\]"):
        read_config(folder)


def test_a_missing_folder_and_a_folder_without_weights_get_the_same_answer(tmp_path):
    from dpmpp.engine.checkpoint import read_config

    (tmp_path / "exists" / "private").mkdir(parents=True)
    (tmp_path / "exists" / "private" / "id_rsa").write_text("secret")
    messages = []
    for folder in (tmp_path / "exists" / "private", tmp_path / "absent" / "private"):
        with pytest.raises(CheckpointError) as caught:
            read_config(folder)
        messages.append(str(caught.value))
    assert messages[0] == messages[1] and str(tmp_path) not in messages[0]


def test_elongated_images_are_refused_from_their_header_and_large_ones_scaled_down(tmp_path, monkeypatch):
    from PIL import ImageFile

    strip = tmp_path / "strip.png"
    Image.new("RGB", (40000, 8)).save(strip, optimize=True)
    photo = encoded(Image.new("RGB", (1200, 2400), (90, 40, 40)), "JPEG")
    assert load_image(photo, max_side=512).size == (256, 512)
    with pytest.raises(ImageLoadError, match="longer side is at most 8 times"):
        load_image(np.zeros((900, 100, 3), np.uint8))

    def decode(self, *args, **kwargs):
        raise AssertionError("decoded an image that its header already disqualifies")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)
    with pytest.raises(ImageLoadError, match="strip.png: image is 40000x8; a person crop's longer side"):
        load_image(strip)
