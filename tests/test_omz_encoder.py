"""DPM++ on Open Model Zoo's 0277, run from its IR in torch: the same outputs as OpenVINO before any training, a
per-location head consistent with the pooled feature, fixed early stages, and checkpoints that embed."""

import json

import numpy as np
import openvino as ov
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dpmpp.api import Pipeline
from dpmpp.cli import main as cli
from dpmpp.config import ConfigError, apply_overrides, load_preset
from dpmpp.data.transforms import CLIP_MEAN, CLIP_STD
from dpmpp.engine.train import Trainer
from dpmpp.model.ir_graph import IRGraph
from dpmpp.model.omz_encoder import OMZ_BACKBONES, OMZEncoder
from dpmpp.paths import ASSETS, DEFAULT_CHECKPOINT
from tests.conftest import FAST

XML = OMZ_BACKBONES["omz_0277"][0]
FULL_SIZE = ["data.height=256", "data.width=128", "data.num_workers=0"]  # 0277 pools per location


@pytest.fixture(scope="module")
def encoder():
    return OMZEncoder("omz_0277").eval()


def real_crops(count: int) -> torch.Tensor:
    """CUHK01 crops at 256x128 as RGB in 0..1, [count, 3, 256, 128]."""
    paths = sorted((ASSETS / "cuhk01" / "images").glob("*.jpg"))[:count]
    images = [np.asarray(Image.open(p).convert("RGB").resize((128, 256)), dtype=np.float32) / 255 for p in paths]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def openvino_embedding(bgr_255: np.ndarray) -> np.ndarray:
    core = ov.Core()
    model = core.read_model(str(XML))
    model.reshape(list(bgr_255.shape))
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(bgr_255)[0]


def test_the_torch_graph_reproduces_openvino_on_real_crops(encoder):
    pixels = real_crops(4)
    clip_input = (pixels - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    reference = openvino_embedding((pixels.flip(1) * 255).numpy())
    with torch.no_grad():
        tokens = encoder(clip_input)
    assert np.abs(tokens.cls.numpy() - reference).max() < 1e-4 * np.abs(reference).max()
    assert [tuple(m.shape) for m in tokens.maps] == [(4, 512, 16, 8)] * 2  # conv4, conv5


def test_every_patch_token_is_the_feature_when_all_locations_contribute_alike(encoder):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        tokens = encoder(torch.randn(2, 3, 256, 128, generator=generator))
        weight = encoder.network.weight(encoder.network.input_of("1127/WithoutBiases", 1)).reshape(1, 512, 16, 8)
        level = tokens.maps[-1].mean(dim=(2, 3), keepdim=True) * weight.mean(dim=(2, 3), keepdim=True)
        uniform = level / weight  # w_l * x_l is the same at every location
        patches = encoder.patch_projection(uniform)
        pooled = encoder.network.run_from("1126", uniform)  # the network's own pooling and head
    assert patches.shape == (2, 128, 256)
    assert torch.allclose(patches, pooled[:, None].expand_as(patches), atol=1e-4)
    assert not torch.allclose(patches[0], patches[1])


def test_freezing_two_stages_stops_their_gradients_only():
    network = IRGraph(XML)
    frozen = network.freeze_through("AvgPool", 1)
    total = sum(p.numel() for p in network.parameters())
    assert 0 < frozen < total / 4
    network(torch.rand(2, 3, 256, 128) * 255).pow(2).mean().backward()
    trained = [p for p in network.parameters() if p.requires_grad]
    assert all(p.grad is None for p in network.parameters() if not p.requires_grad)
    assert trained and all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained[-5:])
    with pytest.raises(ValueError, match="has 2 AvgPool ops"):
        network.freeze_through("AvgPool", 3)


def test_an_ir_with_an_op_there_is_no_kernel_for_is_refused_by_name(tmp_path):
    xml = XML.read_text().replace('type="Sigmoid" version="opset1"', 'type="HSigmoid" version="opset5"')
    (tmp_path / "net.xml").write_text(xml)
    (tmp_path / "net.bin").write_bytes(XML.with_suffix(".bin").read_bytes())
    with pytest.raises(ValueError, match=r"op types \['HSigmoid'\] have no torch kernel"):
        IRGraph(tmp_path / "net.xml")


def test_the_omz_preset_refuses_other_input_sizes_and_frozen_stages_elsewhere():
    with pytest.raises(ConfigError, match="256/128 for omz_0277"):
        apply_overrides(load_preset("omz"), ["data.height=128", "data.width=64"])
    with pytest.raises(ConfigError, match="model.frozen_stages is for omz_0277"):
        apply_overrides(load_preset("osnet"), ["model.frozen_stages=2"])


def test_training_on_0277_exercises_every_dpmpp_part_with_its_first_stages_fixed(small_data, tmp_path):
    config = load_preset("omz")
    config.data.name, config.data.root = "manifest", str(small_data)
    config = apply_overrides(
        config, [*FAST, *FULL_SIZE, "train.epochs=1", "loss.distill_weight=1", "aug.patch_transfer=true"]
    )
    trainer = Trainer(config, tmp_path)
    trainer.stage1()
    stage = trainer.stage2()
    batch = next(iter(stage.batches(1)))
    losses, _, _ = stage.compute(batch)
    sum(stage.weights.get(k, 0.0) * v for k, v in losses.items()).backward()
    assert {"id", "arcface", "i2t", "triplet", "distill", "saliency_cls"} <= set(losses)
    params = trainer.model.encoder.network.params
    first, last = params["conv1_conv_weight_compressed"], params["fc_0_weight_compressed"]
    assert not first.requires_grad and first.grad is None
    assert last.requires_grad and last.grad.abs().sum() > 0
    assert trainer.model.mask_generator.fc.weight.grad.abs().sum() > 0


def test_a_0277_checkpoint_embeds_through_the_pipeline(small_data, tmp_path):
    from dpmpp.engine.train import train

    config = load_preset("omz")
    config.data.name, config.data.root = "manifest", str(small_data)
    out = tmp_path / "omz"
    train(apply_overrides(config, [*FAST, *FULL_SIZE, "train.epochs=1"]), out)
    assert json.loads((out / "config.json").read_text())["model"]["backbone"] == "omz_0277"
    assert "encoder.network.params.fc_0_weight_compressed" in load_file(str(out / "model.safetensors"))
    images = sorted((ASSETS / "cuhk01" / "images").glob("0001*.jpg"))[:3]
    embedding = Pipeline.from_checkpoint(out).embed(images)
    assert embedding.features.shape == embedding.masks.shape == (3, 256)
    assert np.allclose(np.linalg.norm(embedding.features, axis=1), 1, atol=1e-5)
    assert ((embedding.masks > 0) & (embedding.masks < 1)).all()

    shipped = tmp_path / "shipped"
    assert cli(["bundle", str(out), str(shipped)]) == 0
    assert cli(["bundle", str(out), str(shipped)]) == 2  # never into a folder that already holds files
    assert sorted(p.name for p in shipped.iterdir()) == sorted(p.name for p in out.iterdir() if p.suffix != ".pt")
    shipped_state = load_file(str(shipped / "model.safetensors"))
    assert {v.dtype for v in shipped_state.values() if v.is_floating_point()} == {torch.float16}
    assert (shipped / "model.safetensors").stat().st_size < 0.6 * (out / "model.safetensors").stat().st_size
    halved = Pipeline.from_checkpoint(shipped).embed(images)
    assert np.abs(halved.features - embedding.features).max() < 5e-3  # float16 weights, float32 arithmetic
    assert np.abs(halved.masks - embedding.masks).max() < 5e-3


def test_openvino_inference_follows_the_current_weights_and_leaves_gradients_to_torch():
    encoder = OMZEncoder("omz_0277").eval()
    with torch.no_grad():
        for parameter in list(encoder.network.params.values())[-30:]:
            parameter.mul_(1.05)  # weights no longer the IR's
    images = torch.randn(3, 3, 256, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = encoder(images)
        encoder.use_openvino(threads=1)
        fast = encoder(images)
    assert torch.allclose(fast.cls, reference.cls, atol=1e-4)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(fast.maps, reference.maps))
    traced = encoder(images.requires_grad_(True))  # gradients wanted (Grad-CAM): the torch graph
    traced.cls.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_a_server_gives_openvino_every_core_and_concurrent_embeddings_stay_exact():
    from concurrent.futures import ThreadPoolExecutor

    images = sorted((ASSETS / "cuhk01" / "images").glob("000*.jpg"))[:8]
    alone = Pipeline.from_checkpoint(DEFAULT_CHECKPOINT, device="cpu", inference_threads=1)
    shared = Pipeline.from_checkpoint(DEFAULT_CHECKPOINT, device="cpu", inference_threads=2)
    assert (alone.model.encoder.openvino_threads, shared.model.encoder.openvino_threads) == (1, 2)
    reference = alone.embed(images)
    with ThreadPoolExecutor(4) as pool:  # four requests at once queue on OpenVINO's one stream
        rows = list(pool.map(lambda image: shared.embed([image]), images))
    assert np.abs(np.concatenate([r.features for r in rows]) - reference.features).max() < 1e-4
    assert np.abs(np.concatenate([r.masks for r in rows]) - reference.masks).max() < 1e-4
