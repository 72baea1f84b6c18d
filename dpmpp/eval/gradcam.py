"""Grad-CAM (the grad-cam package) of the image encoder toward an identity prototype."""

from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn


class PrototypeLogits(nn.Module):
    """The model seen as a classifier: images [B, 3, H, W] -> prototype similarities [B, C]."""

    def __init__(self, model: nn.Module, use_mask: bool = True) -> None:
        super().__init__()
        self.model, self.use_mask = model, use_mask

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(images, extras=False)
        if self.use_mask and out.masked_logits is not None:
            return out.masked_logits
        if out.logits is None:
            raise ValueError("this model has no identity prototypes to explain toward")
        return out.logits


def _tokens_to_maps(grid: tuple[int, int]):
    def reshape(tokens: torch.Tensor) -> torch.Tensor:  # [B, 1 + h*w, W] -> [B, W, h, w]
        patches = tokens[:, 1:]
        return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)

    return reshape


def prototype_gradcam(
    model: nn.Module, images: torch.Tensor, classes: list[int] | None = None, use_mask: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grad-CAM maps [B, H, W] in [0, 1] toward `classes` (default: each image's best prototype).

    Returns (maps, classes [B], similarities [B] to those classes).
    """
    model.eval()
    wrapper = PrototypeLogits(model, use_mask)
    with torch.no_grad():
        logits = wrapper(images)
    chosen = logits.argmax(1).tolist() if classes is None else list(classes)
    encoder = model.encoder
    grid = (images.shape[-2] // encoder.patch_size[0], images.shape[-1] // encoder.patch_size[1])
    reshape = _tokens_to_maps(grid) if hasattr(encoder, "visual") else None  # a CNN's layer already gives maps
    with GradCAM(model=wrapper, target_layers=[encoder.gradcam_layer()], reshape_transform=reshape) as cam:
        maps = cam(input_tensor=images, targets=[ClassifierOutputTarget(c) for c in chosen])
    scores = logits[torch.arange(len(chosen)), torch.tensor(chosen)].numpy()
    return maps, np.array(chosen), scores
