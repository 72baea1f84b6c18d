"""The spec's behaviour behind documented switches: SIE on the CLS token, plain CE on the unmasked head, i2t on p
before the BN neck; and the paper preset selecting all three."""

import pytest
import torch
import torch.nn.functional as F

from dpmpp.config import apply_overrides, load_preset
from dpmpp.losses import stage2_losses
from dpmpp.model.dpmpp import DPMPPOutput, build_model

SIZE = (64, 32)
CLASSES = 5


def tiny_model(sie_tokens: str, num_cameras: int = 3):
    torch.manual_seed(0)
    config = load_preset("tiny")
    config.model.camera_embedding = True
    config.model.sie_tokens = sie_tokens
    model, _ = build_model(config.model, SIZE, num_classes=CLASSES, num_cameras=num_cameras, with_text=False)
    with torch.no_grad():
        model.encoder.camera.embedding.normal_()
    return model.eval()


def first_block_input(model, images: torch.Tensor, camids: torch.Tensor | None) -> torch.Tensor:
    """Tokens [B, 1 + N, W] entering the encoder's first transformer block."""
    seen = []
    block = model.encoder.visual.transformer.resblocks[0]
    handle = block.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            model.encoder(images, camids)
    finally:
        handle.remove()
    return seen[0]


def test_class_token_is_index_zero_where_sie_is_installed():
    """open_clip puts the class token first: without camera ids, token 0 is ln_pre(class embedding + pos[0])."""
    model = tiny_model("cls")
    visual = model.encoder.visual
    tokens = first_block_input(model, torch.randn(2, 3, *SIZE), None)
    assert tokens.shape == (2, 1 + visual.grid_size[0] * visual.grid_size[1], model.encoder.width)
    with torch.no_grad():
        expected = visual.ln_pre(visual.class_embedding + visual.positional_embedding[0])
    torch.testing.assert_close(tokens[:, 0], expected.expand(2, -1))


def test_sie_cls_touches_only_the_class_token():
    model = tiny_model("cls")
    images = torch.randn(1, 3, *SIZE)
    a = first_block_input(model, images, torch.tensor([0]))
    b = first_block_input(model, images, torch.tensor([1]))
    torch.testing.assert_close(a[:, 1:], b[:, 1:], rtol=0, atol=0)
    assert not torch.allclose(a[:, 0], b[:, 0])
    with torch.no_grad():  # the class token still carries the camera into the feature
        assert not torch.allclose(model(images, torch.tensor([0])).proj, model(images, torch.tensor([1])).proj)


def test_sie_all_touches_every_token():
    model = tiny_model("all")
    images = torch.randn(1, 3, *SIZE)
    a = first_block_input(model, images, torch.tensor([0]))
    b = first_block_input(model, images, torch.tensor([1]))
    assert not torch.isclose(a, b).all(dim=-1).any()  # every token differs


def test_sie_tokens_is_validated():
    config = load_preset("tiny")
    with pytest.raises(ValueError, match=r"model\.sie_tokens must be one of \('all', 'cls'\)"):
        apply_overrides(config, ["model.sie_tokens=patches"])
    config.model.camera_embedding, config.model.sie_tokens = True, "patches"
    with pytest.raises(ValueError, match=r"model\.sie_tokens"):
        build_model(config.model, SIZE, num_classes=CLASSES, num_cameras=2, with_text=False)


def outputs(seed: int = 0, batch: int = 6) -> tuple[DPMPPOutput, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    proj_raw = torch.randn(batch, 8, generator=generator)
    proj = (proj_raw - 0.7) / 2.5  # what a BN neck with those running statistics gives
    text = torch.randn(CLASSES, 8, generator=generator)
    out = DPMPPOutput(
        feat=torch.randn(batch, 12, generator=generator),
        proj=proj,
        proj_raw=proj_raw,
        logits=torch.rand(batch, CLASSES, generator=generator) * 2 - 1,
        text_logits=proj @ text.T,
    )
    labels = torch.tensor([0, 0, 1, 1, 2, 2])[:batch]
    return out, labels, text


def losses_with(overrides: list[str], out, labels, text) -> dict[str, torch.Tensor]:
    cfg = apply_overrides(load_preset("tiny"), ["loss.i2t_scale=null", *overrides]).loss
    return stage2_losses(out, labels, cfg, prototypes=None, text_prototypes=text)


def test_unmasked_head_plain_ce_while_i2t_keeps_its_smoothing():
    out, labels, text = outputs()
    losses = losses_with(["loss.id_label_smoothing=0", "loss.label_smoothing=0.1"], out, labels, text)
    torch.testing.assert_close(losses["id"], F.cross_entropy(30.0 * out.logits, labels))
    torch.testing.assert_close(losses["i2t"], F.cross_entropy(out.proj @ text.T, labels, label_smoothing=0.1))


def test_unmasked_head_follows_label_smoothing_by_default():
    out, labels, text = outputs()
    losses = losses_with(["loss.label_smoothing=0.1"], out, labels, text)
    expected = F.cross_entropy(30.0 * out.logits, labels, label_smoothing=0.1)
    torch.testing.assert_close(losses["id"], expected)
    assert not torch.isclose(losses["id"], F.cross_entropy(30.0 * out.logits, labels))


@pytest.mark.parametrize("scale", [None, 30.0])
def test_i2t_pre_neck_uses_proj_raw(scale):
    out, labels, text = outputs()
    raw, post = (out.proj_raw, out.proj) if scale is None else (F.normalize(out.proj_raw), F.normalize(out.proj))
    tee = text if scale is None else scale * F.normalize(text)
    base = ["loss.label_smoothing=0", f"loss.i2t_scale={'null' if scale is None else scale}"]
    pre = losses_with([*base, "loss.i2t_feature=pre_neck"], out, labels, text)["i2t"]
    post_loss = losses_with([*base, "loss.i2t_feature=post_neck"], out, labels, text)["i2t"]
    torch.testing.assert_close(pre, F.cross_entropy(raw @ tee.T, labels))
    torch.testing.assert_close(post_loss, F.cross_entropy(post @ tee.T, labels))
    assert not torch.isclose(pre, post_loss)


def test_i2t_pre_neck_with_the_model_bn_neck():
    """With a BN neck whose running statistics move p, the i2t loss is the CE of proj_raw @ Tᵀ."""
    model = tiny_model("all")
    with torch.no_grad():
        model.neck.running_mean.fill_(0.5)
        model.neck.running_var.fill_(4.0)
        model.text_prototypes = torch.randn(CLASSES, model.embed_dim)
        out = model(torch.randn(4, 3, *SIZE))
    labels = torch.tensor([0, 1, 2, 3])
    assert not torch.allclose(out.proj, out.proj_raw)
    pre = losses_with(["loss.label_smoothing=0", "loss.i2t_feature=pre_neck"], out, labels, model.text_prototypes)
    post = losses_with(["loss.label_smoothing=0"], out, labels, model.text_prototypes)
    torch.testing.assert_close(pre["i2t"], F.cross_entropy(out.proj_raw @ model.text_prototypes.T, labels))
    torch.testing.assert_close(post["i2t"], F.cross_entropy(out.proj @ model.text_prototypes.T, labels))


def test_i2t_feature_is_validated():
    out, labels, text = outputs()
    with pytest.raises(ValueError, match=r"loss\.i2t_feature must be one of \('post_neck', 'pre_neck'\)"):
        losses_with(["loss.i2t_feature=before"], out, labels, text)
    cfg = load_preset("tiny").loss
    cfg.i2t_feature = "before"
    with pytest.raises(ValueError, match=r"loss\.i2t_feature"):
        stage2_losses(out, labels, cfg, prototypes=None, text_prototypes=text)


def test_paper_preset_follows_the_spec_and_tiny_keeps_its_behaviour():
    paper, tiny = load_preset("vit_b16"), load_preset("tiny")
    assert (paper.model.sie_tokens, paper.loss.id_label_smoothing, paper.loss.i2t_feature) == ("cls", 0.0, "pre_neck")
    assert paper.loss.label_smoothing == 0.1  # the i2t CE keeps CLIP-ReID's smoothing
    assert (tiny.model.sie_tokens, tiny.loss.id_label_smoothing, tiny.loss.i2t_feature) == ("all", None, "post_neck")
