"""Image inputs that refuse an upload from its header (pixels, aspect) before the framework decodes anything."""

from __future__ import annotations

import base64
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import numpy as np
from gradio import component_meta
from gradio.components.base import server
from PIL import Image

from dpmpp.api import MAX_PIXELS, ImageLoadError, check_size, image_size
from dpmpp.app.common import refuse

UPLOAD_SIDE = 512  # uploaded crops are scaled down to fit this square before a session keeps them
LAYER_PIXELS = 1024 * 1024  # one paint layer (the canvas is the enlarged crop: at most 2048x256)
MAX_LAYERS = 8  # paint layers per Apply


def check_encoded(item, max_pixels: int) -> None:
    """Refuse an uploaded image (a FileData, its bytes, or a path) by its header: size and aspect, nothing decoded."""
    try:
        url = getattr(item, "url", None) or ""
        if url.startswith("data:"):
            source = base64.b64decode(url.split(",", 1)[-1], validate=False)
        elif isinstance(item, (bytes, bytearray, str, Path)):
            source = item
        else:
            source = getattr(item, "path", None)
        if source is None:
            raise ImageLoadError("no image was received")
        check_size(*image_size(source), max_pixels=max_pixels)
    except (ImageLoadError, ValueError) as error:
        raise refuse(str(error), error) from error


def load_layer_alpha(layer) -> Image.Image:
    """The painted (alpha) channel of a layer; a file is refused from its header above LAYER_PIXELS."""
    if isinstance(layer, np.ndarray):
        layer = Image.fromarray(layer)
    if not isinstance(layer, Image.Image):
        check_encoded(layer, LAYER_PIXELS)
        layer = Image.open(layer)
    try:
        check_size(layer.width, layer.height, max_pixels=LAYER_PIXELS)
    except ImageLoadError as error:
        raise refuse(f"paint layer: {error}", error) from error
    return layer.convert("RGBA").getchannel("A")


@contextmanager
def _without_stub_files():
    """Gradio writes a .pyi stub beside every module that defines a component class; these two need none."""
    original = component_meta.create_or_modify_pyi
    component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        yield
    finally:
        component_meta.create_or_modify_pyi = original


with _without_stub_files():

    class CheckedImage(gr.Image):
        """gr.Image whose uploads are refused from their header (pixels, aspect) before the framework decodes them.

        Use with type="filepath" and image_mode=None: the handler then gets the file and decodes it itself.
        """

        is_template = True  # drawn by the frontend's Image

        def preprocess(self, payload):
            if payload is not None:
                check_encoded(payload, MAX_PIXELS)
            return super().preprocess(payload)

    class CheckedImageEditor(gr.ImageEditor):
        """gr.ImageEditor that refuses more than MAX_LAYERS layers, or an image over LAYER_PIXELS, from the headers,
        before the framework decodes any of them; pending uploads of layers are bounded too."""

        is_template = True  # drawn by the frontend's ImageEditor
        MAX_PENDING = 64  # editors whose layers are uploaded but not yet applied

        def preprocess(self, payload):
            if payload is not None:
                parts = self.blob_storage.get(payload.id) if payload.id is not None else payload
                if parts is not None:
                    if len(parts.layers) > MAX_LAYERS:
                        raise gr.Error(f"At most {MAX_LAYERS} paint layers; merge or delete some.")
                    for item in (parts.background, parts.composite, *parts.layers):
                        if item is not None:
                            check_encoded(item, LAYER_PIXELS)
            return super().preprocess(payload)

        @server
        def accept_blobs(self, data):
            index = data.data.get("index")
            if data.data.get("type") == "layer" and index not in (None, "null") and not 0 <= int(index) < MAX_LAYERS:
                raise gr.Error(f"At most {MAX_LAYERS} paint layers; merge or delete some.")
            check_encoded(data.files[0][1], LAYER_PIXELS)
            while len(self.blob_storage) >= self.MAX_PENDING and data.data.get("id") not in self.blob_storage:
                self.blob_storage.pop(next(iter(self.blob_storage)))  # the oldest pending editor
            return super().accept_blobs(data)
