"""DPM++ on a pretrained OSNet-x0.25: it starts from the peer's exact features, trains every DPM++ part, and its
checkpoints serve `Pipeline.embed` like the CLIP ones. Relational distillation from a peer."""

import json

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import load_file

from dpmpp.api import Pipeline
from dpmpp.config import apply_overrides, load_preset
from dpmpp.data.transforms import CLIP_MEAN, CLIP_STD
from dpmpp.engine.train import Trainer
from dpmpp.losses import relational_distillation
from dpmpp.model.dpmpp import build_model
from dpmpp.model.osnet_encoder import IMAGENET_MEAN, IMAGENET_STD
from dpmpp.paths import ASSETS, PRETRAINED
from tests.conftest import FAST

OSNET_FAST = [*FAST, "data.height=64", "data.width=32", "data.num_workers=0"]


def osnet_config(small_data, *overrides):
    config = load_preset("osnet")
    config.data.name, config.data.root = "manifest", str(small_data)
    return apply_overrides(config, [*OSNET_FAST, *overrides])


def test_the_osnet_encoder_gives_the_peers_features_from_clip_normalised_images():
    model, _ = build_model(load_preset("osnet").model, (256, 128), num_classes=3, with_text=False)
    pixels = torch.rand(2, 3, 256, 128, generator=torch.Generator().manual_seed(0))
    clip_input = (pixels - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    imagenet_input = (pixels - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )
    session = onnxruntime.InferenceSession(str(PRETRAINED / "osnet_x0_25_msmt17.onnx"))
    reference = session.run(None, {"images": imagenet_input.numpy()})[0]
    with torch.no_grad():
        out = model.eval()(clip_input)
    assert np.abs(out.proj_raw.numpy() - reference).max() < 1e-3  # p before the neck is the peer's feature
    assert out.attention is None and out.mask.shape == (2, 512)
    assert torch.allclose(out.mask, torch.full_like(out.mask, 0.5))  # the mask starts neutral


def test_training_on_osnet_exercises_every_dpmpp_part_and_keeps_bn_statistics(small_data, tmp_path):
    config = osnet_config(small_data, "train.epochs=1", "loss.distill_teacher=omz-0288", "loss.distill_weight=1")
    trainer = Trainer(config, tmp_path)
    stats_before = {k: v.clone() for k, v in trainer.model.state_dict().items() if "running_" in k}
    trainer.stage1()
    stage = trainer.stage2()
    steps = []
    for epoch in range(1, stage.epochs + 1):
        for batch in stage.batches(epoch):
            losses, _, _ = stage.compute(batch)
            steps.append(losses)
            sum(stage.weights.get(k, 0.0) * v for k, v in losses.items()).backward()
            break
        break
    names = set(steps[0])
    assert {"id", "arcface", "i2t", "triplet", "distill", "saliency_cls"} <= names
    assert "orth" not in names  # no attention in a CNN
    encoder_grads = [p.grad for p in trainer.model.encoder.parameters() if p.requires_grad]
    assert all(g is not None for g in encoder_grads)
    assert trainer.model.mask_generator.fc.weight.grad.abs().sum() > 0
    network_bn = {k: v for k, v in trainer.model.state_dict().items() if "running_" in k and "encoder." in k}
    assert all(torch.equal(v, stats_before[k]) for k, v in network_bn.items())  # frozen BN statistics


def test_an_osnet_checkpoint_embeds_through_the_pipeline(small_data, tmp_path):
    from dpmpp.engine.train import train

    out = tmp_path / "osnet"
    train(osnet_config(small_data, "train.epochs=1"), out)
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["backbone"] == "osnet_x0_25"
    assert any(k.startswith("encoder.network.conv5") for k in load_file(str(out / "model.safetensors")))
    pipeline = Pipeline.from_checkpoint(out)
    embedding = pipeline.embed(sorted((ASSETS / "cuhk01" / "images").glob("0001*.jpg"))[:3])
    assert embedding.features.shape == embedding.masks.shape == (3, 512)
    assert np.allclose(np.linalg.norm(embedding.features, axis=1), 1, atol=1e-5)
    assert ((embedding.masks > 0) & (embedding.masks < 1)).all()


def test_relational_distillation_is_zero_exactly_when_the_similarities_agree():
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(8, 16, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=generator))
    same_geometry = torch.cat([teacher @ rotation, torch.zeros(8, 4)], dim=1)  # other width, same cosines
    assert relational_distillation(same_geometry, teacher, 0.1).item() == pytest.approx(0.0, abs=1e-5)
    student = torch.randn(8, 20, generator=generator, requires_grad=True)
    loss = relational_distillation(student, teacher, 0.1)
    assert loss.item() > 0.1
    loss.backward()
    assert student.grad.abs().sum() > 0


def test_a_backbone_outside_the_choices_is_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match="osnet_x0_25"):
        apply_overrides(load_preset("osnet"), ["model.backbone=resnet50"])
