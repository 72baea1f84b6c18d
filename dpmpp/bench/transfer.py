"""What patch transfer does to real training batches of pets09_occ: how much of the partner's person is pasted,
how many triplet negatives class-ignoring removes, and how often the partner was itself hidden by a person.

The batches are the `tiny` preset's (P x K sampler, train transforms, person silhouettes, its patch size and
transfer settings); no model is needed, because silhouettes guide the transfer on this benchmark.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from dpmpp.config import load_preset
from dpmpp.data.dataset import ImageDataset
from dpmpp.data.datasets import load_split
from dpmpp.data.foreground import PersonMasks
from dpmpp.data.patch_transfer import SaliencyPatchTransfer, patch_fraction
from dpmpp.data.samplers import PKBatchSampler
from dpmpp.data.transforms import build_transforms
from dpmpp.losses.metric import pair_masks
from dpmpp.paths import ASSETS


def preset_patch_size(config) -> tuple[int, int]:
    """The preset's ViT patch, from its open_clip model config (no model is built)."""
    import open_clip

    import dpmpp.model.backbone  # noqa: F401  registers the project's open_clip configs (dpmpp-tiny)

    size = open_clip.get_model_config(config.model.clip_model)["vision_cfg"]["patch_size"]
    return (size, size) if isinstance(size, int) else tuple(size)


def measure(epochs: int = 3, nearer_persons: bool = False, seed: int = 0) -> dict:
    """Statistics over `epochs` epochs of stage-2 batches, transferred as training does."""
    config = load_preset("tiny")
    data, aug = config.data, config.aug
    root = ASSETS / "pets09_occ"
    split = load_split("pets09_occ", root)
    train = split.train
    pid_map = split.train_pid_map()
    patch = preset_patch_size(config)
    transform = build_transforms(data.height, data.width, train=True, flip_prob=data.flip_prob, pad=data.pad)
    dataset = ImageDataset(train, transform, pid_map, PersonMasks.for_root(root, nearer_persons))
    sampler = PKBatchSampler([r.pid for r in train], data.num_pids, data.num_instances, seed, 1, 0)
    transfer = SaliencyPatchTransfer.from_config(aug, True, patch, torch.Generator().manual_seed(seed))
    behind_person = np.array(
        [r.meta.get("occluder") == "person" and float(r.meta["occluded_fraction"]) >= 0.15 for r in train]
    )
    pasted_share, partner_behind, negatives_on, negatives_off, mixed = [], [], [], [], 0
    for epoch in range(epochs):
        torch.manual_seed(seed * 1000 + epoch)  # the random crops and flips
        sampler.set_epoch(epoch)
        for batch in DataLoader(dataset, batch_sampler=sampler):
            person = batch["person"][:, 0].bool()
            result = transfer(batch["image"], patch_fraction(batch["person"], patch), batch["pid"])
            index = batch["index"].numpy()
            mixed += int(result.mixed.sum())
            for i in np.nonzero(result.mixed.numpy())[0]:
                partner_behind.append(behind_person[index[int(result.partner[i])]])
            for i in np.nonzero((result.partner_pid >= 0).numpy())[0]:
                partner = person[int(result.partner[i])]
                pasted_share.append(float((result.region[i] & partner).sum()) / max(1, int(partner.sum())))
            negatives_on.append(pair_masks(batch["pid"], result.mixed, result.partner_pid)[1].sum(1).numpy())
            negatives_off.append(pair_masks(batch["pid"], result.mixed, None)[1].sum(1).numpy())
    share = np.array(pasted_share)
    on, off = np.concatenate(negatives_on), np.concatenate(negatives_off)
    return {
        "epochs": epochs,
        "nearer_persons": nearer_persons,
        "mixed": mixed,
        "mixed_with_another_identity": len(share),
        "partner_person_pasted_median": float(np.median(share)),
        "partner_person_pasted_p90": float(np.quantile(share, 0.9)),
        "partner_person_pasted_quarter_or_more": float(np.mean(share >= 0.25)),
        "partner_hidden_by_a_person": float(np.mean(partner_behind)),
        "negatives_with_class_ignoring": float(on.mean()),
        "negatives_without": float(off.mean()),
    }


def format_report(results: list[dict]) -> str:
    lines = [
        "| person masks | mixed | with another identity | partner's person pasted: median / p90 / ≥ 25 % "
        "| partner ≥ 15 % hidden by a person | triplet negatives per anchor, class-ignoring on / off |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        masks = "nearer persons cut out" if r["nearer_persons"] else "silhouettes"
        lines.append(
            f"| {masks} | {r['mixed']} | {r['mixed_with_another_identity']} "
            f"| {100 * r['partner_person_pasted_median']:.1f} % / {100 * r['partner_person_pasted_p90']:.1f} % / "
            f"{100 * r['partner_person_pasted_quarter_or_more']:.1f} % | {100 * r['partner_hidden_by_a_person']:.1f} % "
            f"| {r['negatives_with_class_ignoring']:.1f} / {r['negatives_without']:.1f} |"
        )
    return "\n".join(lines)
