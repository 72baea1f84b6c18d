"""Saliency-guided patch transfer (SPT): synthetic occlusion made of real pixels, with occlusion-aware pairing.

For an anchor i and a partner j, the anchor keeps its own (horizontally shifted) pixels inside j's visible
silhouette and receives j's background and occluders elsewhere: x_i' = roll_r(x_i) ⊙ M_j + x_j ⊙ (1 − M_j),
at patch granularity. The partner and shift r maximise the occlusion-aware IoU |roll_r(M_i) ∩ M_j| / |M_j|.
Saliency is computed by the caller and passed in; randomness comes only from the injected generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class TransferResult:
    images: torch.Tensor  # [B, 3, H, W] mixed batch (unmixed rows are the inputs)
    mixed: torch.Tensor  # [B] bool
    partner: torch.Tensor  # [B] batch index of the partner, -1 if not mixed
    partner_pid: torch.Tensor  # [B] partner identity when it differs from the anchor's, else -1 (class-ignoring)
    shift: torch.Tensor  # [B] circular shift of the anchor, in patch columns
    oiou: torch.Tensor  # [B] occlusion-aware IoU of the chosen pair (0 if not mixed)
    region: torch.Tensor  # [B, H, W] bool: pixels that came from the partner


def occlusion_iou(masks: torch.Tensor) -> torch.Tensor:
    """OIoU for every (anchor i, shift r, partner j): |roll_r(M_i) ∩ M_j| / |M_j|. masks [B, h, w] bool -> [B, w, B]."""
    b, h, w = masks.shape
    m = masks.float()
    rolled = torch.stack([torch.roll(m, shifts=r, dims=2) for r in range(w)], dim=1)  # [B, w, h, w]; w is small
    intersection = rolled.flatten(2) @ m.flatten(1).T  # [B, w, B]
    visible = m.flatten(1).sum(1)  # [B]
    return intersection / visible.clamp_min(1)[None, None, :] * (visible > 0)[None, None, :]


def patch_fraction(masks: torch.Tensor, patch_size) -> torch.Tensor:
    """Pixel masks [B, 1, H, W] in {0, 1} -> the fraction of each patch they cover [B, h, w] (the saliency grid)."""
    return torch.nn.functional.avg_pool2d(masks.float(), tuple(patch_size)).squeeze(1)


REGIONS = ("partner", "anchor_person")


def pixel_region(
    masks: torch.Tensor,
    partner: torch.Tensor,
    mixed: torch.Tensor,
    size,
    patch_size,
    shift: torch.Tensor | None = None,
    rule: str = "partner",
) -> torch.Tensor:
    """Pixels [B, H, W] that come from the partner.

    "partner" (SPT): wherever the partner's binarised saliency says "not person", so the anchor also loses its
    own background and any real occluder it had. "anchor_person" (R): only the anchor's own (shifted) person
    patches that the partner's person does not cover; the anchor keeps its background and real occluders.
    """
    if rule not in REGIONS:
        raise ValueError(f"transfer region must be one of {REGIONS}, got {rule!r}")
    ph, pw = patch_size
    partner_visible = masks[partner.clamp_min(0)]  # [B, h, w]
    region = ~partner_visible & mixed[:, None, None]
    if rule == "anchor_person":
        shift = torch.zeros(len(masks), dtype=torch.long) if shift is None else shift
        columns = (torch.arange(masks.shape[2])[None, :] - shift[:, None]) % masks.shape[2]
        anchor_visible = masks.gather(2, columns[:, None, :].expand_as(masks))  # roll_r(M_i), per row
        region &= anchor_visible
    region = region.repeat_interleave(ph, dim=1).repeat_interleave(pw, dim=2)
    return region[:, : size[0], : size[1]]


def compose(
    images: torch.Tensor, partner: torch.Tensor, shift: torch.Tensor, region: torch.Tensor, patch_size
) -> torch.Tensor:
    """roll_r(x_i) inside the partner's person, x_j elsewhere; rows with an empty region are only shifted.

    images [B, 3, H, W], partner [B] (batch index, -1: none), shift [B] in patch columns, region [B, H, W].
    """
    width = images.shape[-1]
    columns = (torch.arange(width, device=images.device)[None, :] - shift[:, None] * patch_size[1]) % width
    rolled = images.gather(-1, columns[:, None, None, :].expand_as(images))  # per-row circular shift
    return torch.where(region[:, None], images[partner.clamp_min(0)], rolled)


class SaliencyPatchTransfer:
    """Batch augmentation; `prob` mixes each anchor independently, `enabled=False` is the identity."""

    def __init__(
        self,
        prob: float = 0.5,
        enabled: bool = True,
        pairing: bool = True,
        top_fraction: float = 0.1,
        min_oiou: float = 0.7,
        threshold: float = 0.5,
        patch_size: tuple[int, int] = (16, 16),
        generator: torch.Generator | None = None,
        max_shift: int | None = None,
        region: str = "partner",
        top: float | None = None,
    ) -> None:
        if region not in REGIONS:
            raise ValueError(f"transfer region must be one of {REGIONS}, got {region!r}")
        self.prob, self.enabled, self.pairing, self.max_shift, self.region = prob, enabled, pairing, max_shift, region
        self.top_fraction, self.min_oiou, self.threshold, self.top = top_fraction, min_oiou, threshold, top
        self.patch_size = patch_size
        self.generator = generator or torch.Generator().manual_seed(0)

    @classmethod
    def from_config(
        cls, aug, enabled: bool, patch_size: tuple[int, int], generator: torch.Generator | None = None
    ) -> SaliencyPatchTransfer:
        """The transfer an `AugCfg` describes, for a backbone with `patch_size` (training and `bench transfer`)."""
        return cls(
            aug.transfer_prob,
            enabled,
            aug.occlusion_pairing,
            aug.top_fraction,
            aug.min_oiou,
            aug.saliency_threshold,
            tuple(patch_size),
            generator,
            aug.max_shift,
            aug.transfer_region,
            aug.saliency_top,
        )

    def binarise(self, saliency: torch.Tensor) -> torch.Tensor:
        """[B, h, w] saliency -> bool person masks (1 = person): above the threshold, or, with `top`, each map's
        highest `top` share of patches (ties at the cut kept)."""
        if self.top is None:
            return saliency > self.threshold
        flat = saliency.flatten(1)
        keep = max(1, round(self.top * flat.shape[1]))
        cut = flat.topk(keep, dim=1).values[:, -1:]
        return (flat >= cut).reshape(saliency.shape)

    def __call__(self, images: torch.Tensor, saliency: torch.Tensor, pids: torch.Tensor) -> TransferResult:
        b = images.shape[0]
        masks = self.binarise(saliency).cpu()
        grid_w = masks.shape[2]
        mixed = (
            torch.rand(b, generator=self.generator) < self.prob
            if self.enabled and b > 1
            else torch.zeros(b, dtype=torch.bool)
        )
        partner, shift, oiou = self._choose(masks, b, grid_w)
        mixed &= masks.flatten(1).any(1)[partner]  # a partner with no visible person would replace the whole image
        partner, shift = torch.where(mixed, partner, -1), torch.where(mixed, shift, 0)
        oiou = torch.where(mixed, oiou, torch.zeros_like(oiou))
        pids_cpu = pids.cpu()
        partner_pid = torch.where(
            mixed & (pids_cpu[partner.clamp_min(0)] != pids_cpu), pids_cpu[partner.clamp_min(0)], -1
        )
        region = pixel_region(masks, partner, mixed, images.shape[-2:], self.patch_size, shift, self.region)
        out = compose(
            images, partner.to(images.device), shift.to(images.device), region.to(images.device), self.patch_size
        )
        return TransferResult(
            out,
            mixed.to(images.device),
            partner.to(images.device),
            partner_pid.to(pids.device),
            shift.to(images.device),
            oiou.to(images.device),
            region.to(images.device),
        )

    def allowed_shifts(self, grid_w: int) -> torch.Tensor:
        """[grid_w] bool: the circular horizontal shifts (in patch columns) this transfer may use."""
        if self.max_shift is None:
            return torch.ones(grid_w, dtype=torch.bool)
        shifts = torch.arange(grid_w)
        return torch.minimum(shifts, grid_w - shifts) <= self.max_shift

    def best_partner(
        self, masks: torch.Tensor, partner: int | None = None, shift: int | None = None
    ) -> tuple[int, int, float]:
        """(candidate, shift, oIoU) for the anchor `masks[0]` against the candidates `masks[1:]`: the allowed pair with
        the highest occlusion-aware IoU (deterministic: the best pair rather than a draw from the top fraction).
        `partner` fixes the candidate; `shift` fixes the shift (and then overrides the max-shift rule)."""
        scores = occlusion_iou(masks)[0, :, 1:]  # [shifts, candidates]
        grid_w, count = scores.shape
        if partner is not None and not 0 <= partner < count:
            raise IndexError(f"partner {partner} outside 0..{count - 1}")
        allowed = torch.zeros_like(scores, dtype=torch.bool)
        if shift is not None:
            allowed[shift % grid_w] = True
        else:
            allowed[self.allowed_shifts(grid_w)] = True
        if partner is not None:
            allowed[:, [i for i in range(count) if i != partner]] = False
        chosen_shift, chosen = divmod(int(scores.masked_fill(~allowed, -1.0).flatten().argmax()), count)
        return chosen, chosen_shift, float(scores[chosen_shift, chosen])

    def mix_pair(self, pair: torch.Tensor, masks: torch.Tensor, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`pair` = [anchor, partner] images [2, 3, H, W] with their person masks [2, h, w]: the anchor carrying the
        partner's occlusion at `shift`, and the [H, W] region taken from the partner."""
        partner, mixed, shifts = torch.tensor([1, -1]), torch.tensor([True, False]), torch.tensor([shift, 0])
        region = pixel_region(masks, partner, mixed, pair.shape[-2:], self.patch_size, shifts, self.region)
        return compose(pair, partner, shifts, region, self.patch_size)[0], region[0]

    def _choose(self, masks: torch.Tensor, b: int, grid_w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(partner, shift, oiou) per anchor, all [B]."""
        if not self.pairing:
            offset = torch.randint(1, max(b, 2), (b,), generator=self.generator)
            partner = (torch.arange(b) + offset) % max(b, 1)
            return partner, torch.zeros(b, dtype=torch.long), occlusion_iou(masks)[torch.arange(b), 0, partner]
        scores = occlusion_iou(masks)  # [B, w, B]
        scores[torch.arange(b), :, torch.arange(b)] = -1.0  # never pair with oneself
        allowed = self.allowed_shifts(grid_w)
        scores[:, ~allowed, :] = -1.0
        flat = scores.flatten(1)  # [B, w*B], index = r * B + j
        k = max(1, math.ceil(self.top_fraction * int(allowed.sum()) * (b - 1)))
        top_scores, top_index = flat.topk(k, dim=1)
        draw = torch.randint(0, k, (b, 1), generator=self.generator)
        drawn_score, drawn_index = top_scores.gather(1, draw).squeeze(1), top_index.gather(1, draw).squeeze(1)
        accept = drawn_score > self.min_oiou
        index = torch.where(accept, drawn_index, top_index[:, 0])
        score = torch.where(accept, drawn_score, top_scores[:, 0])
        return index % b, index // b, score.clamp_min(0)
