"""Losses return named tensors; the engine weights them from the config and sums."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from dpmpp.config import LossCfg, check_choice
from dpmpp.losses.classification import arcface_logits, smoothed_cross_entropy
from dpmpp.losses.metric import batch_hard_triplet, masked_pair_loss, pair_masks, supervised_contrastive
from dpmpp.losses.regularisers import head_orthogonality, prototype_alignment, saliency_selection

__all__ = ["stage1_losses", "stage2_losses", "loss_weights"]


def stage1_losses(image_feats: torch.Tensor, text_feats: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """CLIP-ReID stage 1: i2t and t2i supervised contrast, temperature 1, raw dot products."""
    return {
        "i2t_supcon": supervised_contrastive(image_feats, text_feats, labels, labels),
        "t2i_supcon": supervised_contrastive(text_feats, image_feats, labels, labels),
    }


def stage2_losses(
    out,
    labels: torch.Tensor,
    cfg: LossCfg,
    *,
    prototypes: torch.Tensor | None,
    text_prototypes: torch.Tensor | None,
    mixed: torch.Tensor | None = None,
    partner_pid: torch.Tensor | None = None,
    holistic_positives: bool = False,
    person: torch.Tensor | None = None,
    align_targets: torch.Tensor | None = None,
    teacher: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Every stage-2 term that the model's output supports. `partner_pid` [B] (-1: none) drives class-ignoring.

    `person` [B, h, w]: the fraction of each patch that shows a person (the dataset's masks, after transfer);
    with it, the saliency head is also fitted to those masks. `align_targets` [C, E]: what the alignment term
    pulls W toward (the model's `prototype_targets()`); default `text_prototypes`. `teacher` [B, D']: a pretrained
    peer's unit features of each image's clean crop, which the batch's similarity structure is distilled from.
    """
    # Losses are computed in float32 whatever precision the forward pass ran in (bf16 autocast on CUDA).
    out = dataclasses.replace(
        out,
        **{
            f.name: getattr(out, f.name).float()
            for f in dataclasses.fields(out)
            if isinstance(getattr(out, f.name), torch.Tensor)
        },
    )
    ignore = partner_pid if partner_pid is not None and bool((partner_pid >= 0).any()) else None
    check_choice("loss.i2t_feature", cfg.i2t_feature)
    losses: dict[str, torch.Tensor] = {}
    if out.logits is not None:
        smoothing = cfg.label_smoothing if cfg.id_label_smoothing is None else cfg.id_label_smoothing
        losses["id"] = smoothed_cross_entropy(cfg.id_scale * out.logits, labels, smoothing, ignore)
    if out.masked_logits is not None:
        arc = arcface_logits(out.masked_logits, labels, cfg.arcface_scale, cfg.arcface_margin)
        losses["arcface"] = smoothed_cross_entropy(arc, labels, 0.0, ignore)
    if out.text_logits is not None:
        losses["i2t"] = smoothed_cross_entropy(
            i2t_logits(out, text_prototypes, cfg), labels, cfg.label_smoothing, ignore
        )
    positives, negatives = pair_masks(labels, mixed, partner_pid, holistic_positives)
    losses["triplet"] = batch_hard_triplet(out.feat, positives, negatives, cfg.triplet_margin) + batch_hard_triplet(
        out.proj_raw if out.proj_raw is not None else out.proj, positives, negatives, cfg.triplet_margin
    )
    if out.mask is not None and cfg.masked_pair_weight > 0:
        losses["masked_pair"] = masked_pair_loss(
            out.proj, out.mask, positives, negatives, cfg.masked_pair_scale, cfg.masked_pair_margin
        )
    if out.attention is not None:
        losses["orth"] = head_orthogonality(out.attention)
    align_targets = text_prototypes if align_targets is None else align_targets
    if cfg.align_weight > 0 and prototypes is not None and align_targets is not None:
        losses["align"] = prototype_alignment(prototypes, align_targets)
    if out.saliency is not None and prototypes is not None:
        losses.update(
            saliency_selection(
                out.saliency, out.patch_proj, prototypes, labels, cfg.id_scale, cfg.saliency_keep, ignore
            )
        )
        if person is not None:
            losses["saliency_person"] = torch.nn.functional.binary_cross_entropy(
                out.saliency.clamp(1e-6, 1 - 1e-6), person.float()
            )
    if teacher is not None:
        losses["distill"] = relational_distillation(out.proj, teacher.float(), cfg.distill_temperature)
    return losses


def relational_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between each sample's softmax over its cosine similarities to the rest of the batch.

    student [B, E], teacher [B, D] (any D: only similarities are compared). The teacher sees clean crops; the
    student sees them after augmentation and patch transfer, so it learns the teacher's metric under occlusion.
    """
    off_diagonal = ~torch.eye(len(student), dtype=torch.bool, device=student.device)
    s = F.normalize(student, dim=1) @ F.normalize(student, dim=1).T
    t = F.normalize(teacher, dim=1) @ F.normalize(teacher, dim=1).T
    s = s[off_diagonal].view(len(student), -1) / temperature
    t = t[off_diagonal].view(len(student), -1) / temperature
    return F.kl_div(F.log_softmax(s, dim=1), F.log_softmax(t, dim=1), log_target=True, reduction="batchmean")


def i2t_logits(out, text_prototypes: torch.Tensor, cfg: LossCfg) -> torch.Tensor:
    """The i2t loss's logits [B, C] from p [B, E] (before or after the BN neck, `cfg.i2t_feature`) and T [C, E]:
    raw dot products p·Tᵀ, or `cfg.i2t_scale`·cos(p, T)."""
    pre_neck = cfg.i2t_feature == "pre_neck" and out.proj_raw is not None
    feature = out.proj_raw if pre_neck else out.proj
    if cfg.i2t_scale is not None:
        return cfg.i2t_scale * F.normalize(feature, dim=1) @ F.normalize(text_prototypes.float(), dim=1).T
    return feature @ text_prototypes.float().T if pre_neck else out.text_logits


def loss_weights(cfg: LossCfg) -> dict[str, float]:
    return {
        "i2t_supcon": 1.0,
        "t2i_supcon": 1.0,
        "id": cfg.id_weight,
        "arcface": cfg.arcface_weight,
        "i2t": cfg.i2t_weight,
        "triplet": cfg.triplet_weight,
        "masked_pair": cfg.masked_pair_weight,
        "orth": cfg.orth_weight,
        "align": cfg.align_weight,
        "saliency_cls": cfg.saliency_weight,
        "saliency_ratio": cfg.saliency_weight * cfg.saliency_ratio_weight,
        "saliency_overlap": cfg.saliency_weight * cfg.saliency_overlap_weight,
        "saliency_person": cfg.saliency_weight * cfg.saliency_person_weight,
        "distill": cfg.distill_weight,
    }
