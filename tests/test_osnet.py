"""OSNet-x0.25 in torch against the shipped ONNX export: same outputs, same weights, frozen BN, clear errors."""

import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from safetensors.torch import load_file

from dpmpp.model.osnet import (
    DEFAULT_WEIGHTS,
    OnnxStructureError,
    OSNet,
    freeze_batchnorm_stats,
    load_pretrained_osnet,
    state_dict_from_onnx,
)
from dpmpp.paths import ASSETS

ONNX_PATH = ASSETS / "pretrained" / "osnet_x0_25_msmt17.onnx"
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@pytest.fixture(scope="module")
def model() -> OSNet:
    return load_pretrained_osnet()


def normalise(rgb01: np.ndarray) -> np.ndarray:
    """[N, H, W, 3] RGB 0..1 -> [N, 3, H, W] ImageNet-normalised float32."""
    return np.ascontiguousarray(((rgb01 - MEAN) / STD).transpose(0, 3, 1, 2), dtype=np.float32)


def crops(count: int) -> np.ndarray:
    paths = sorted((ASSETS / "pets09_occ" / "crops" / "query").glob("*.jpg"))[::40][:count]
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((128, 256), Image.BILINEAR)) for p in paths]) / 255


def onnx_features(images: np.ndarray) -> np.ndarray:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(ONNX_PATH), options, providers=["CPUExecutionProvider"])
    return session.run(["output"], {"images": images})[0]


def test_torch_module_reproduces_the_onnx_output(model):
    random = np.random.default_rng(0).random((4, 256, 128, 3), dtype=np.float32)
    real = crops(4)
    assert len(real) == 4
    for batch in (normalise(random), normalise(real)):
        reference = onnx_features(batch)
        with torch.no_grad():
            feature = model(torch.from_numpy(batch)).feature.numpy()
        assert np.abs(feature - reference).max() <= 1e-4
        assert np.abs(reference).max() > 0.1  # a real comparison, not of two zero vectors


def test_onnx_mapping_equals_the_shipped_safetensors():
    mapped = state_dict_from_onnx(ONNX_PATH)
    shipped = load_file(str(DEFAULT_WEIGHTS))
    assert list(mapped) == list(OSNet().state_dict())
    assert set(mapped) == set(shipped)
    for key, value in mapped.items():
        assert torch.equal(value, shipped[key]), key


@pytest.mark.parametrize("batch", [1, 4])
def test_output_shapes_and_fc_per_location(model, batch):
    images = torch.randn(batch, 3, 256, 128, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        out = model(images)
        tokens = model.fc_per_location(out.maps[1])  # [B, 128, 512]
        pre_relu = model.fc[:2](out.maps[1].flatten(2).transpose(1, 2).reshape(-1, 128)).reshape(batch, 128, 512)
        from_pooled = model.fc_per_location(out.pooled[:, :, None, None])  # a 1x1 map
    assert out.feature.shape == (batch, 512)
    assert [tuple(m.shape) for m in out.maps] == [(batch, 128, 16, 8)] * 2
    assert out.pooled.shape == (batch, 128)
    assert tokens.shape == (batch, 16 * 8, 512)
    assert torch.allclose(out.pooled, out.maps[1].mean((2, 3)), atol=1e-6)
    torch.testing.assert_close(from_pooled[:, 0], out.feature)
    # Linear + BN (eval) are affine, so they commute with the spatial mean; the ReLU does not.
    torch.testing.assert_close(torch.relu(pre_relu.mean(1)), out.feature, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tokens, torch.relu(pre_relu))
    assert (tokens.mean(1) >= out.feature - 1e-5).all()


def test_frozen_batchnorm_survives_train_mode():
    model = load_pretrained_osnet()  # frozen_bn=True by default
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    images = torch.randn(2, 3, 256, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.eval()(images).feature
        model.train()
        assert model.training and not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        got = model(images).feature
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    torch.testing.assert_close(got, expected)

    model.frozen_bn = False  # the same forward pass without freezing does move the statistics
    with torch.no_grad():
        model.train()(images)
    assert not torch.equal(before["conv5.bn.running_mean"], model.state_dict()["conv5.bn.running_mean"])
    assert freeze_batchnorm_stats(model) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) + 1


def test_a_foreign_onnx_file_gives_a_clear_error(tmp_path):
    weight = numpy_helper.from_array(np.zeros((16, 3, 7, 7), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["output"], kernel_shape=[7, 7], strides=[2, 2], pads=[3] * 4)],
        "one_conv",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 256, 128])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 16, 128, 64])],
        [weight],
    )
    path = tmp_path / "one_conv.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(OnnxStructureError, match="not torchreid's osnet_x0_25"):
        state_dict_from_onnx(path)


def test_a_wrong_weight_shape_gives_a_clear_error(tmp_path):
    proto = onnx.load(str(ONNX_PATH))
    first = next(i for i, tensor in enumerate(proto.graph.initializer) if tensor.name.startswith("onnx::Conv"))
    name = proto.graph.initializer[first].name
    proto.graph.initializer[first].CopyFrom(numpy_helper.from_array(np.zeros((8, 3, 7, 7), dtype=np.float32), name))
    path = tmp_path / "wrong_shape.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(OnnxStructureError, match=r"conv1\.conv\.weight needs float32 \(16, 3, 7, 7\)"):
        state_dict_from_onnx(path)


def test_missing_onnx_package_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(RuntimeError, match="pip install onnx"):
        state_dict_from_onnx(ONNX_PATH)
