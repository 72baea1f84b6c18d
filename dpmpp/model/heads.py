"""The dynamic prototype mask generator, the per-patch saliency head, and masked-cosine logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-12


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class MaskGenerator(nn.Module):
    """DPM's hierarchical mask generator: patch maps of several blocks -> a mask over prototype dimensions.

    maps: list of [B, W, h, w] -> mask [B, D] in (0, 1). The final linear layer starts at zero, so every
    mask starts at exactly 0.5 and training decides what to switch off.
    """

    def __init__(self, width: int, num_maps: int, out_dim: int, hidden: int = 512, reduce: int | None = None) -> None:
        super().__init__()
        self.reduce = (
            nn.ModuleList(
                [
                    nn.Sequential(
                        nn.Conv2d(width, reduce, 1, bias=False), nn.BatchNorm2d(reduce), nn.ReLU(inplace=True)
                    )
                    for _ in range(num_maps)
                ]
            )
            if reduce
            else None
        )
        in_channels = (reduce or width) * num_maps
        self.body = nn.Sequential(
            _conv_block(in_channels, hidden),
            nn.MaxPool2d(2, ceil_mode=True),
            _conv_block(hidden, hidden),
            nn.MaxPool2d(2, ceil_mode=True),
            _conv_block(hidden, hidden),
        )
        self.fc = nn.Linear(hidden, out_dim)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        if self.reduce is not None:
            maps = [reduce(m) for reduce, m in zip(self.reduce, maps)]
        x = self.body(torch.cat(maps, dim=1))  # [B, hidden, h', w']
        return torch.sigmoid(self.fc(x.amax(dim=(2, 3))))


class SaliencyHead(nn.Module):
    """SPT's per-patch saliency: a 1x1 conv over the concatenated patch maps, sigmoid. -> [B, h, w] in (0, 1)."""

    def __init__(self, width: int, num_maps: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width * num_maps, 1, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(self.conv(torch.cat(maps, dim=1))).squeeze(1)


class BNNeck(nn.BatchNorm1d):
    """CLIP-ReID's BatchNorm neck (no learnt shift); a batch of one uses the running statistics."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:  # batch statistics of one sample are undefined
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def cosine_logits(feats: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """[B, D] x [C, D] -> [B, C] cosine similarities."""
    return F.normalize(feats, dim=1) @ F.normalize(prototypes, dim=1).T


def masked_cosine_logits(feats: torch.Tensor, masks: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """`cos_ic = <f̂_i, normalize(m_i ⊙ ŵ_c)>`: each sample's mask gates the prototypes.

    feats [B, D], masks [B, D], prototypes [C, D] -> [B, C].
    """
    f_hat = F.normalize(feats, dim=1)
    w_hat = F.normalize(prototypes, dim=1)
    numerator = (f_hat * masks) @ w_hat.T
    denominator = ((masks * masks) @ (w_hat * w_hat).T).clamp_min(_EPS).sqrt()
    return numerator / denominator
