"""Open Model Zoo's person-reidentification-retail-0277 as DPM++'s image encoder, fine-tuned in torch.

0277 is an OSNet (x1.0, instance-normalised, with Linear Context Transform gates; 2.09 M parameters) that Intel
trained for person re-ID and ships as OpenVINO IR (Apache-2.0, `assets/pretrained/omz/`). `IRGraph` runs that IR
op by op in torch, reproducing OpenVINO's output to about 1e-5 (tests/test_omz_encoder.py), so a fine-tuning run
starts from the peer's exact features. It meets the encoder interface DPMPP uses, as `OSNetEncoder` does:
- x and p are both 0277's 256-d embedding (the prototype space is the peer's own embedding space);
- the mask generator and saliency head read the conv4 and conv5 maps, [B, 512, H/16, W/16];
- patch tokens enter the prototype space through 0277's own head at every location (`patch_projection`);
- a CNN has no attention, so the head-orthogonality loss does not apply.
Images arrive CLIP-normalised RGB and are turned back into what the IR expects: BGR in 0..255.
"""

from __future__ import annotations

import torch
from torch import nn

from dpmpp.data.transforms import CLIP_MEAN, CLIP_STD
from dpmpp.model.backbone import VisualTokens
from dpmpp.model.ir_graph import IRGraph
from dpmpp.paths import PRETRAINED

OMZ_BACKBONES = {
    # backbone name -> (IR file, conv4 and conv5 outputs, the learnt global pooling conv, its bias add)
    "omz_0277": (PRETRAINED / "omz" / "person-reidentification-retail-0277.xml", ("1123", "1126"), "1127/WithoutBiases",
                 "1127"),
}  # fmt: skip


class OMZEncoder(nn.Module):
    """An Open Model Zoo OSNet returning the tokens DPM++ consumes. images [B, 3, 256, 128] -> VisualTokens."""

    def __init__(self, backbone: str) -> None:
        super().__init__()
        xml, maps, self._pool_conv, self._pool_out = OMZ_BACKBONES[backbone]
        self.network = IRGraph(xml, taps=maps)
        self.input_size = self.network.input_shape[2:]
        self.camera = None
        self.width = self.network.weight(self.network.input_of(self._pool_conv, 1)).shape[0]
        self.embed_dim = self.network.weight("fc.0.weight").shape[0]
        self._runner = None  # OpenVINO, for inference with fixed weights (use_openvino)
        self.openvino_threads: int | None = None  # the CPU threads it was compiled for
        self.map_blocks = [0, 1]  # conv4, conv5
        self.patch_size = (16, 16)
        mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
        self.register_buffer("raw_scale", (255 * std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("raw_shift", (255 * mean).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> VisualTokens:
        if tuple(images.shape[2:]) != self.input_size:
            raise ValueError(
                f"this encoder takes {self.input_size[0]}x{self.input_size[1]} images (its pooling is "
                f"learnt per location); got {tuple(images.shape[2:])}"
            )
        raw = (images * self.raw_scale + self.raw_shift).flip(1)  # CLIP-normalised RGB -> BGR 0..255
        if self._runner is not None and not torch.is_grad_enabled() and not self.training:
            feature, maps = self._runner(raw)
            feature, maps = feature.to(images.device), [m.to(images.device) for m in maps]
        else:
            feature, maps = self.network.forward_with_taps(raw)
        return VisualTokens(cls=feature, proj=feature, maps=maps, last_block_input=None, last_tokens=maps[-1])

    def use_openvino(self, threads: int) -> None:
        """Run inference (eval mode, no gradients) through OpenVINO with the current weights: the same features to
        about 1e-5, about four times faster on a CPU. For a model whose weights stay fixed, as a loaded checkpoint's;
        training and Grad-CAM keep the torch graph."""
        self._runner = self.network.openvino_runner(threads)
        self.openvino_threads = threads

    def patch_projection(self, tokens: torch.Tensor) -> torch.Tensor:
        """conv5 map [B, C, h, w] -> prototype space [B, h*w, D]: 0277's head at every location.

        0277 pools with a learnt per-location weight, pooled = sum_l w_l * x_l + b. Location l's token is what the
        head gives for h*w * w_l * x_l + b, so the tokens' mean before the head's final PReLU equals the feature's.
        """
        batch, channels, height, width = tokens.shape
        weight = self.network.weight(self.network.input_of(self._pool_conv, 1)).reshape(1, channels, height, width)
        bias = self.network.weight(self.network.input_of(self._pool_out, 1)).reshape(1, channels, 1, 1)
        per_location = tokens * weight * (height * width) + bias
        flat = per_location.flatten(2).transpose(1, 2).reshape(batch * height * width, channels, 1, 1)
        return self.network.run_from(self._pool_out, flat).reshape(batch, height * width, -1)

    def freeze_stages(self, stages: int) -> int:
        """Fix the weights of the first `stages` stages (1: conv1, 2: + conv2, 3: + conv3); returns how many
        parameters are fixed. Early stages hold generic filters, and their backward pass at full resolution is
        most of a training step's cost."""
        ends = [("MaxPool", 1), ("AvgPool", 1), ("AvgPool", 2)]
        if not 0 <= stages <= len(ends):
            raise ValueError(f"frozen stages must be 0 to {len(ends)}; got {stages}")
        return self.network.freeze_through(*ends[stages - 1]) if stages else 0

    def cls_attention_logits(self, block_input) -> None:
        return None

    def gradcam_layer(self) -> nn.Module:
        return self.network.tap_modules[-1]


def create_omz_encoder(backbone: str, pretrained: str | None) -> OMZEncoder:
    """`pretrained`: "omz" (the bundled IR's weights) or None (the same, to be overwritten by a checkpoint's)."""
    if backbone not in OMZ_BACKBONES:
        raise ValueError(f"model.backbone {backbone!r} is not an OMZ network; expected one of {tuple(OMZ_BACKBONES)}")
    if pretrained not in (None, "", "none", "None", "omz"):
        raise ValueError(f"model.pretrained for {backbone} must be 'omz' (the bundled IR) or null; got {pretrained!r}")
    return OMZEncoder(backbone)
