"""Contract tests of the DPM++ model on the tiny open_clip config (random weights, no downloads)."""

import pytest
import torch

from dpmpp.config import load_preset
from dpmpp.losses import stage1_losses
from dpmpp.model.dpmpp import build_model
from dpmpp.model.heads import masked_cosine_logits

SIZE = (64, 32)


@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    config = load_preset("tiny")
    config.model.camera_embedding = True
    model, text = build_model(config.model, SIZE, num_classes=5, num_cameras=3)
    return config, model, text


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("training", [True, False])
def test_output_shapes(built, batch, training):
    _, model, _ = built
    model.train(training)
    out = model(torch.randn(batch, 3, *SIZE), torch.zeros(batch, dtype=torch.long))
    e = model.embed_dim
    assert out.proj.shape == (batch, e) and out.mask.shape == (batch, e) and out.feat.shape == (batch, 192)
    assert out.logits.shape == out.masked_logits.shape == out.text_logits.shape == (batch, 5)
    if training:
        assert out.saliency.shape == (batch, 8, 4) and out.attention.shape == (batch, 3, 32)
        assert out.patch_proj.shape == (batch, 32, e)
    else:
        assert out.saliency is None and out.attention is None


def test_mask_starts_at_one_half(built):
    _, model, _ = built
    model.eval()
    mask = model(torch.randn(3, 3, *SIZE)).mask
    assert torch.allclose(mask, torch.full_like(mask, 0.5))


def test_encoder_wrapper_matches_open_clip(built):
    """Our forward_intermediates path gives exactly open_clip's encode_image (no camera ids passed)."""
    _, model, _ = built
    model.eval()
    images = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        ours = model.encoder(images).proj
        reference = model.encoder.visual(images)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_camera_embedding_changes_features(built):
    _, model, _ = built
    model.eval()
    with torch.no_grad():
        model.encoder.camera.embedding.normal_()
        images = torch.randn(1, 3, *SIZE)
        a = model(images, torch.tensor([0])).proj
        b = model(images, torch.tensor([1])).proj
    assert not torch.allclose(a, b)


def test_masked_logits_match_loop_reference():
    torch.manual_seed(1)
    feats, masks, prototypes = torch.randn(3, 8), torch.rand(3, 8), torch.randn(4, 8)
    expected = torch.zeros(3, 4)
    for i in range(3):
        f = feats[i] / feats[i].norm()
        for c in range(4):
            w = prototypes[c] / prototypes[c].norm()
            gated = masks[i] * w
            expected[i, c] = f @ (gated / gated.norm())
    torch.testing.assert_close(masked_cosine_logits(feats, masks, prototypes), expected)


def test_every_trainable_parameter_gets_a_gradient(built):
    config, model, _ = built
    from dpmpp.losses import loss_weights, stage2_losses

    model.train()
    labels, weights = torch.tensor([0, 0, 1, 1]), loss_weights(config.loss)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    # The mask generator's last layer starts at zero (mask = 0.5), so the layers before it receive
    # gradient from the second step on: take one step, then check every parameter.
    for _ in range(2):
        optimizer.zero_grad()
        out = model(torch.randn(4, 3, *SIZE), torch.tensor([0, 1, 0, 2]))
        losses = stage2_losses(
            out,
            labels,
            config.loss,
            prototypes=model.prototypes,
            text_prototypes=torch.randn(5, model.embed_dim),
            holistic_positives=True,
        )
        sum(weights[k] * v for k, v in losses.items()).backward()
        optimizer.step()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, missing


def test_stage1_trains_only_prompts_and_lowers_its_loss(built):
    _, model, text = built
    torch.manual_seed(0)
    for p in text.parameters():
        p.requires_grad_(False)
    text.prompts.ctx.requires_grad_(True)
    labels = torch.arange(5).repeat_interleave(4)
    image_feats = torch.randn(5, model.embed_dim).repeat_interleave(4, 0) + 0.1 * torch.randn(20, model.embed_dim)
    optimizer = torch.optim.Adam([text.prompts.ctx], lr=1e-2)
    first = None
    for _ in range(30):
        losses = stage1_losses(image_feats, text(labels), labels)
        loss = sum(losses.values())
        first = first if first is not None else float(loss.detach())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.5 * first
    assert text.prompts.ctx.grad is not None
    frozen = [n for n, p in text.named_parameters() if n != "prompts.ctx" and p.grad is not None]
    assert not frozen and not any(p.grad is not None for p in model.encoder.parameters() if not p.requires_grad)


def test_bf16_autocast_forward_and_losses(built):
    """The CUDA path runs the forward pass in bf16 autocast; the same on the CPU catches dtype mismatches."""
    config, model, _ = built
    from dpmpp.losses import loss_weights, stage2_losses

    model.train()
    config.loss.i2t_scale = 30.0  # the scaled-cosine branch mixes the bf16 output with float text prototypes
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 3, *SIZE), torch.tensor([0, 1, 0, 2]))
    assert out.proj.dtype == torch.bfloat16
    losses = stage2_losses(
        out, torch.tensor([0, 0, 1, 1]), config.loss, prototypes=model.prototypes, text_prototypes=model.text_prototypes
    )
    weights = loss_weights(config.loss)
    total = sum(weights[k] * v for k, v in losses.items())
    assert torch.isfinite(total) and all(v.dtype == torch.float32 for v in losses.values())
    total.backward()


@pytest.mark.parametrize("detach", [True, False])
def test_saliency_losses_reach_the_encoder_only_when_not_detached(detach):
    from dpmpp.losses.regularisers import saliency_selection

    torch.manual_seed(0)
    config = load_preset("tiny")
    config.model.saliency_detach = detach
    model, _ = build_model(config.model, SIZE, num_classes=3)
    model.train()
    out = model(torch.randn(4, 3, *SIZE))
    losses = saliency_selection(out.saliency, out.patch_proj, model.prototypes, torch.tensor([0, 0, 1, 2]), 30.0, 0.3)
    sum(losses.values()).backward()
    head = [p.grad for p in model.saliency_head.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in head)  # the head always learns
    visual = model.encoder.visual
    shared = {"proj": visual.proj.grad, "ln_post": visual.ln_post.weight.grad}  # they also make p
    touched = [name for name, g in shared.items() if g is not None and g.abs().sum() > 0]
    assert touched == ([] if detach else ["proj", "ln_post"])


@pytest.mark.parametrize("init", ["text", "text_centred", "random"])
def test_prototypes_start_from_the_text_features_as_configured(init):
    config = load_preset("tiny")
    config.model.prototype_init = init
    torch.manual_seed(0)
    model, _ = build_model(config.model, SIZE, num_classes=4)
    before = model.prototypes.detach().clone()
    shared = torch.randn(1, model.embed_dim) * 5  # a direction every identity's text feature shares
    text_features = shared + torch.randn(4, model.embed_dim)
    model.set_text_prototypes(text_features)
    w = model.prototypes.detach()
    if init == "random":
        torch.testing.assert_close(w, before)
        return
    target = text_features - text_features.mean(0) if init == "text_centred" else text_features
    torch.testing.assert_close(w, torch.nn.functional.normalize(target, dim=1))
    torch.testing.assert_close(model.prototype_targets(), target)
    pairwise = (w @ w.T)[~torch.eye(4, dtype=torch.bool)].mean()
    assert (pairwise < 0) if init == "text_centred" else (pairwise > 0.5)  # centring removes the shared direction


def test_an_unknown_prototype_init_is_refused():
    config = load_preset("tiny")
    config.model.prototype_init = "txt"
    with pytest.raises(ValueError, match="prototype_init must be one of"):
        build_model(config.model, SIZE, num_classes=4)
