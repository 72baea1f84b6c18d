"""OSNet-x0.25 as DPM++'s image encoder: a pretrained person re-ID foundation in place of the CLIP image tower.

It meets the encoder interface DPMPP uses (`VisualTokens`, `patch_projection`, `patch_size`), so the prototype
mask, the masked metric, patch transfer with pairing and the text stage all run unchanged on top of it:
- x and p are both OSNet's 512-d pre-classifier feature (the prototype space is OSNet's own feature space, so
  a fine-tuning run starts from the peer's exact features);
- the mask generator and saliency head read the conv4 and conv5 maps, [B, 128, H/16, W/16]: a 16×16-pixel "patch"
  grid, as a ViT-B/16's;
- patch tokens enter the prototype space through OSNet's own fc at every location;
- a CNN has no attention, so the head-orthogonality loss does not apply (`last_block_input` is None).
Images arrive normalised with CLIP's mean/std (the project's one convention) and are re-normalised to ImageNet's,
which OSNet was trained with.
"""

from __future__ import annotations

import torch
from torch import nn

from dpmpp.data.transforms import CLIP_MEAN, CLIP_STD
from dpmpp.model.backbone import VisualTokens
from dpmpp.model.osnet import OSNet, load_pretrained_osnet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OSNET_BACKBONES = ("osnet_x0_25",)
_BUNDLED = ("msmt17", "bundled")


class OSNetEncoder(nn.Module):
    """OSNet returning the tokens DPM++ consumes. images [B, 3, H, W] (CLIP-normalised) -> VisualTokens."""

    def __init__(self, network: OSNet) -> None:
        super().__init__()
        self.network = network
        self.camera = None  # no SIE: a CNN has no tokens to add a camera embedding to
        self.width = network.conv5.conv.out_channels  # channels of both maps
        self.embed_dim = network.feature_dim
        self.map_blocks = [0, 1]  # conv4, conv5
        self.patch_size = (16, 16)
        scale = torch.tensor(CLIP_STD) / torch.tensor(IMAGENET_STD)
        shift = (torch.tensor(CLIP_MEAN) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
        self.register_buffer("renorm_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("renorm_shift", shift.view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> VisualTokens:
        out = self.network(images * self.renorm_scale + self.renorm_shift)
        return VisualTokens(
            cls=out.feature, proj=out.feature, maps=out.maps, last_block_input=None, last_tokens=out.maps[-1]
        )

    def patch_projection(self, tokens: torch.Tensor) -> torch.Tensor:
        """conv5 map [B, 128, h, w] -> prototype space [B, h*w, 512] (OSNet's fc at every location)."""
        return self.network.fc_per_location(tokens)

    def cls_attention_logits(self, block_input) -> None:
        return None

    def gradcam_layer(self) -> nn.Module:
        return self.network.conv5


def create_osnet_encoder(backbone: str, pretrained: str | None) -> OSNetEncoder:
    """`pretrained`: "msmt17" (the bundled MSMT17 weights), a safetensors file, or None (random init)."""
    if backbone not in OSNET_BACKBONES:
        raise ValueError(f"model.backbone {backbone!r} is not an OSNet; expected one of {OSNET_BACKBONES}")
    if pretrained is None or pretrained in ("", "none", "None"):
        return OSNetEncoder(OSNet(frozen_bn=True))
    return OSNetEncoder(load_pretrained_osnet(None if pretrained in _BUNDLED else pretrained, frozen_bn=True))
