"""Pretrained person re-ID networks run zero-shot through their own runtimes: the peers DPM++ is compared with.

- OSNet-x0.25 trained on MSMT17 (torchreid's weights, exported to ONNX), through onnxruntime.
- Intel Open Model Zoo person-reidentification-retail-0288/0287/0286/0277 (OpenVINO IR), through `openvino`.

Both runtimes are plain pip packages (`pip install onnxruntime openvino`, in requirements.txt); a missing one gives
a clear error naming the package. The files ship in `assets/pretrained/` (see its README for sources and terms).
Features are L2-normalised and compared by cosine, as each model's documentation says.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from dpmpp.data.images import load_image
from dpmpp.paths import PRETRAINED

logger = logging.getLogger(__name__)

INPUT_SIZE = (128, 256)  # (width, height) every peer takes
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class PeerUnavailable(RuntimeError):
    """A peer's runtime package or model file is missing; the message says what to install or where to look."""


@dataclass(frozen=True)
class PeerSpec:
    name: str  # registry name, e.g. "omz-0277"
    title: str  # what tables and the app call it
    runtime: str  # "onnxruntime" or "openvino"
    file: str  # model file relative to assets/pretrained
    colour: str  # "rgb_imagenet": RGB 0..1 then ImageNet mean/std; "bgr_raw": BGR 0..255 (normalised inside)
    params: int  # parameter count, for tables
    trained_on: str


PEERS: dict[str, PeerSpec] = {
    spec.name: spec
    for spec in (
        PeerSpec(
            "osnet-x0.25-msmt17",
            "OSNet-x0.25 (MSMT17)",
            "onnxruntime",
            "osnet_x0_25_msmt17.onnx",
            "rgb_imagenet",
            200_138,
            "MSMT17",
        ),
        *(
            PeerSpec(
                f"omz-{number}",
                f"OMZ person-reid-retail-{number}",
                "openvino",
                f"omz/person-reidentification-retail-{number}.xml",
                "bgr_raw",
                params,
                "not stated by Open Model Zoo",
            )
            for number, params in (("0288", 183_000), ("0287", 595_000), ("0286", 1_230_000), ("0277", 2_090_000))
        ),
    )
}


def peer_names() -> list[str]:
    return list(PEERS)


def preprocess(images: Sequence, colour: str) -> np.ndarray:
    """Paths, PIL images or arrays -> [N, 3, 256, 128] float32 in the peer's own convention."""
    pixels = np.stack(
        [np.asarray(load_image(image).resize(INPUT_SIZE, Image.BILINEAR), dtype=np.float32) for image in images]
    )  # [N, H, W, 3] RGB 0..255
    if colour == "rgb_imagenet":
        pixels = (pixels / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    elif colour == "bgr_raw":
        pixels = pixels[..., ::-1]
    else:
        raise ValueError(f"unknown colour convention {colour!r}")
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32)


class PeerEmbedder:
    """A pretrained peer as a feature extractor: images -> unit features [N, D]. It has no mask."""

    has_mask = False

    def __init__(self, spec: PeerSpec, folder: str | Path | None = None, threads: int | None = None) -> None:
        self.spec = spec
        self.path = Path(folder or PRETRAINED) / spec.file
        if not self.path.is_file():
            raise PeerUnavailable(f"{spec.title}: model file {self.path.name} is not in {self.path.parent}")
        self._run = _onnx_runner(self.path, threads) if spec.runtime == "onnxruntime" else _openvino_runner(self.path)

    @property
    def name(self) -> str:
        return self.spec.title

    def embed(self, images: Sequence, batch_size: int = 64) -> np.ndarray:
        """Unit features [N, D] for paths, PIL images or arrays."""
        if len(images) == 0:
            raise ValueError("embed() needs at least one image")
        chunks = [
            self._run(preprocess(images[start : start + batch_size], self.spec.colour))
            for start in range(0, len(images), batch_size)
        ]
        features = np.concatenate(chunks).astype(np.float32)
        return features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)


def load_peer(name: str, folder: str | Path | None = None, threads: int | None = None) -> PeerEmbedder:
    """The peer registered as `name` (see `peer_names()`)."""
    if name not in PEERS:
        raise KeyError(f"unknown pretrained peer {name!r}; known: {', '.join(PEERS)}")
    return PeerEmbedder(PEERS[name], folder, threads)


def _onnx_runner(path: Path, threads: int | None):
    try:
        import onnxruntime
    except ImportError as error:
        raise PeerUnavailable("the ONNX peers need onnxruntime: `pip install onnxruntime`") from error
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {input_name: batch})[0]


def _openvino_runner(path: Path):
    try:
        import openvino
    except ImportError as error:
        raise PeerUnavailable("the Open Model Zoo peers need OpenVINO: `pip install openvino`") from error
    core = openvino.Core()
    model = core.read_model(str(path))
    model.reshape({model.inputs[0].get_any_name(): [-1, 3, INPUT_SIZE[1], INPUT_SIZE[0]]})  # the IR fixes batch 1
    # f32 throughout: on CPUs with bf16 units the plugin would otherwise infer in bf16, and features would depend
    # on the batch's composition
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda batch: compiled(batch)[0]
