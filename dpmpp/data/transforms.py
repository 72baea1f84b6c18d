"""Image transforms for training and testing (torchvision v2), with CLIP's normalisation."""

from __future__ import annotations

from torchvision.transforms import v2

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def build_transforms(
    height: int, width: int, train: bool, flip_prob: float = 0.5, pad: int = 10, erasing_prob: float = 0.0
):
    """PIL RGB image -> float tensor [3, height, width], normalised like CLIP's pre-training."""
    import torch

    steps = [v2.ToImage(), v2.Resize((height, width), antialias=True)]
    if train:
        steps += [v2.RandomHorizontalFlip(flip_prob), v2.Pad(pad), v2.RandomCrop((height, width))]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(CLIP_MEAN, CLIP_STD)]
    if train and erasing_prob > 0:
        steps.append(v2.RandomErasing(p=erasing_prob, value=0))
    return v2.Compose(steps)


def denormalize(images):
    """Inverse of the normalisation: [B, 3, H, W] -> values in [0, 1] (for display)."""
    import torch

    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)
