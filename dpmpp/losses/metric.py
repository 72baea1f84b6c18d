"""Metric losses: batch-hard triplet with explicit positive/negative masks, and stage 1's supervised contrast."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dpmpp.model.heads import masked_cosine_logits


def pair_masks(
    labels: torch.Tensor,
    mixed: torch.Tensor | None = None,
    partner: torch.Tensor | None = None,
    holistic_positives: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which (anchor, other) pairs count as positives and negatives. labels [B] -> two [B, B] bool masks.

    `partner[i]` is the identity whose pixels were pasted into sample i (-1 if none): with class-ignoring, a
    negative j is dropped when j's identity is in i's image or i's identity is in j's image.
    `holistic_positives`: a mixed anchor's positives are only unmixed images of its identity (R).
    """
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positives, negatives = same & ~eye, ~same
    if partner is not None:
        contains_other = (partner[:, None] == labels[None, :]) | (labels[:, None] == partner[None, :])
        negatives = negatives & ~contains_other
    if holistic_positives and mixed is not None:
        positives = positives & ~(mixed[:, None] & mixed[None, :])
    return positives, negatives


def batch_hard_triplet(
    feats: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, margin: float | None = 0.3
) -> torch.Tensor:
    """Hardest positive vs hardest negative per anchor (Euclidean); `margin=None` is the soft margin."""
    dist = torch.cdist(feats.float(), feats.float()).clamp_min(1e-12)
    valid = positives.any(1) & negatives.any(1)
    if not bool(valid.any()):
        return feats.sum() * 0.0
    hardest_positive = dist.masked_fill(~positives, float("-inf")).amax(1)[valid]
    hardest_negative = dist.masked_fill(~negatives, float("inf")).amin(1)[valid]
    if margin is None:
        return F.softplus(hardest_positive - hardest_negative).mean()
    return F.relu(hardest_positive - hardest_negative + margin).mean()


def masked_pair_loss(
    feats: torch.Tensor,
    masks: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    scale: float = 30.0,
    margin: float = 0.3,
) -> torch.Tensor:
    """The test-time metric, trained on the batch's own pairs (R).

    `s_ij = <f̂_i, normalize(m_i ⊙ f̂_j)>`: anchor i's mask gates every other sample, as the query's mask gates
    the gallery at test time. Per anchor, `log(1 + Σ_p Σ_n exp(scale·(s_in − s_ip + margin)))` (the pair form
    of the circle/AM-softmax family), over the positive and negative masks of `pair_masks`.
    feats [B, D], masks [B, D] -> scalar.
    """
    sim = masked_cosine_logits(feats.float(), masks.float(), feats.float())
    valid = positives.any(1) & negatives.any(1)
    if not bool(valid.any()):
        return feats.sum() * 0.0
    hard_positive = (-scale * sim).masked_fill(~positives, float("-inf")).logsumexp(1)
    hard_negative = (scale * (sim + margin)).masked_fill(~negatives, float("-inf")).logsumexp(1)
    return F.softplus(hard_positive + hard_negative)[valid].mean()


def supervised_contrastive(
    queries: torch.Tensor,
    keys: torch.Tensor,
    query_labels: torch.Tensor,
    key_labels: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """CLIP-ReID's SupCon: mean log-likelihood of same-identity keys among all keys. [B, E], [K, E] -> scalar."""
    logits = queries @ keys.T / temperature
    logits = logits - logits.amax(dim=1, keepdim=True).detach()
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (query_labels[:, None] == key_labels[None, :]).float()
    return -((positive * log_prob).sum(1) / positive.sum(1).clamp_min(1)).mean()
