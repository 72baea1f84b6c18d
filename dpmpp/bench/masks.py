"""Do the masks mean something? How a query's mask moves with occlusion, on the real occluded queries.

`python -m dpmpp bench masks [--checkpoint DIR] [--out DIR]` prints the numbers and saves a figure:
- per query, the mask's active fraction (mask > 0.5) and its mean absolute distance to the mask of its clean
  counterpart (same person, same track, nearest unoccluded frame), against the occluded fraction (Spearman ρ);
- the same by occluder type;
- rank-1 and mAP by occlusion bin with the test-time mask on and off;
- on cuhk01_occ, whose queries are occluded copies of cuhk01's, how far a mask moves with occlusion against how far
  it is from another person's, and how much of the generator's output depends on the image at all
  (`image_dependence`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from dpmpp.explorer import BenchmarkExplorer


def mask_table(explorer: BenchmarkExplorer, threshold: float = 0.5) -> pd.DataFrame:
    """One row per query that has a clean counterpart."""
    rows = []
    for i, record in enumerate(explorer.split.query):
        clean = explorer.clean_counterpart(i)
        if clean is None:
            continue
        mask, clean_mask = explorer.query.masks[i], explorer.gallery.masks[clean]
        rows.append(
            {
                "query": i,
                "occluder": record.meta.get("occluder", ""),
                "occluded_fraction": float(record.meta.get("occluded_fraction", np.nan)),
                "active_fraction": float((mask > threshold).mean()),
                "clean_active_fraction": float((clean_mask > threshold).mean()),
                "distance_to_clean": float(np.abs(mask - clean_mask).mean()),
                "frames_apart": abs(
                    int(record.meta.get("frame", 0)) - int(explorer.split.gallery[clean].meta.get("frame", 0))
                ),
            }
        )
    return pd.DataFrame(rows)


def partial_spearman(x, y, z) -> tuple[float, float]:
    """Spearman correlation of x and y with z's (rank) effect removed, and its two-sided p-value (t, n − 3 df)."""
    from scipy.stats import t as student_t

    r_xy, r_xz, r_yz = spearmanr(x, y)[0], spearmanr(x, z)[0], spearmanr(y, z)[0]
    rho = (r_xy - r_xz * r_yz) / np.sqrt((1 - r_xz**2) * (1 - r_yz**2))
    dof = len(x) - 3
    t_stat = rho * np.sqrt(dof / max(1e-12, 1 - rho**2))
    return float(rho), float(2 * student_t.sf(abs(t_stat), dof))


def analyse(explorer: BenchmarkExplorer) -> dict:
    if not explorer.has_mask:
        raise ValueError("this checkpoint has no mask generator")
    table = mask_table(explorer)
    rho_distance = spearmanr(table["occluded_fraction"], table["distance_to_clean"])
    rho_active = spearmanr(table["occluded_fraction"], table["active_fraction"])
    near = table[table["frames_apart"] <= 6]  # rules out a drift with time between query and counterpart
    rho_near = spearmanr(near["occluded_fraction"], near["distance_to_clean"])
    rho_frames = spearmanr(table["frames_apart"], table["distance_to_clean"])
    partial = partial_spearman(table["occluded_fraction"], table["distance_to_clean"], table["frames_apart"])
    by_type = table.groupby("occluder")[["occluded_fraction", "active_fraction", "distance_to_clean"]].mean()
    by_type["queries"] = table.groupby("occluder").size()
    return {
        "queries": len(table),
        "spearman_distance_vs_occlusion": (float(rho_distance.statistic), float(rho_distance.pvalue)),
        "spearman_active_vs_occlusion": (float(rho_active.statistic), float(rho_active.pvalue)),
        "spearman_distance_vs_occlusion_within_6_frames": (
            float(rho_near.statistic),
            float(rho_near.pvalue),
            len(near),
        ),
        "spearman_distance_vs_frames_apart": (float(rho_frames.statistic), float(rho_frames.pvalue)),
        "spearman_occlusion_vs_frames_apart": float(spearmanr(table["occluded_fraction"], table["frames_apart"])[0]),
        "partial_spearman_distance_vs_occlusion_given_frames": partial,
        "active_fraction_occluded_mean": float(table["active_fraction"].mean()),
        "active_fraction_clean_mean": float(table["clean_active_fraction"].mean()),
        "by_occluder": by_type.round(3).reset_index().to_dict(orient="records"),
        "by_bin": explorer.by_occlusion().round(3).to_dict(orient="records"),
        "table": table,
    }


def save_figure(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, bins = result["table"], pd.DataFrame(result["by_bin"])
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colours = {"person": "#d13b3b", "pole": "#2c6fbb", "sign": "#1e9e48", "border": "#999999"}
    for occluder, rows in table.groupby("occluder"):
        for axis, column in ((axes[0], "distance_to_clean"), (axes[1], "active_fraction")):
            axis.scatter(
                rows["occluded_fraction"], rows[column], s=12, label=occluder, color=colours.get(occluder, "black")
            )
    rho_d, rho_a = result["spearman_distance_vs_occlusion"][0], result["spearman_active_vs_occlusion"][0]
    axes[0].set(
        xlabel="occluded fraction of the query",
        ylabel="mean |m_query − m_clean|",
        title=f"mask distance to the clean counterpart (ρ = {rho_d:.2f})",
    )
    axes[1].set(
        xlabel="occluded fraction of the query",
        ylabel="fraction of dimensions with m > 0.5",
        title=f"active dimensions (ρ = {rho_a:.2f})",
    )
    axes[0].legend(title="occluder")
    labels = list(dict.fromkeys(bins["bin"]))
    x = np.arange(len(labels))
    for offset, matching in ((-0.2, "mask on"), (0.2, "mask off")):
        rows = bins[bins["matching"] == matching].set_index("bin").reindex(labels)
        axes[2].bar(x + offset, 100 * rows["rank-1"], width=0.4, label=matching)
    axes[2].set_xticks(x, [f"{b}\n(n={n})" for b, n in zip(labels, bins.drop_duplicates("bin")["queries"])])
    axes[2].set(ylabel="rank-1 (%)", title="rank-1 by occlusion bin")
    axes[2].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def format_report(result: dict) -> str:
    d, a = result["spearman_distance_vs_occlusion"], result["spearman_active_vs_occlusion"]
    lines = [
        f"queries with a clean counterpart: {result['queries']}",
        f"Spearman ρ(occluded fraction, mask distance to clean) = {d[0]:.3f} (p = {d[1]:.2g})",
        f"  control: with the counterpart at most 6 frames away, ρ = "
        f"{result['spearman_distance_vs_occlusion_within_6_frames'][0]:.3f} "
        f"(n = {result['spearman_distance_vs_occlusion_within_6_frames'][2]}); "
        f"ρ(frames apart, mask distance) = {result['spearman_distance_vs_frames_apart'][0]:.3f}; "
        f"ρ(occluded fraction, frames apart) = {result['spearman_occlusion_vs_frames_apart']:.3f}",
        "  partial ρ(occluded fraction, mask distance | frames apart) = "
        f"{result['partial_spearman_distance_vs_occlusion_given_frames'][0]:.3f} "
        f"(p = {result['partial_spearman_distance_vs_occlusion_given_frames'][1]:.2g})",
        f"Spearman ρ(occluded fraction, active fraction) = {a[0]:.3f} (p = {a[1]:.2g})",
        f"mean active fraction: occluded queries {result['active_fraction_occluded_mean']:.3f}, "
        f"their clean counterparts {result['active_fraction_clean_mean']:.3f}",
        "",
        "| occluder | queries | occluded | active fraction | distance to clean |",
        "|---|---|---|---|---|",
    ]
    for row in result["by_occluder"]:
        lines.append(
            f"| {row['occluder']} | {row['queries']} | {row['occluded_fraction']:.2f} | "
            f"{row['active_fraction']:.3f} | {row['distance_to_clean']:.3f} |"
        )
    lines += ["", "| bin | matching | queries | rank-1 | mAP |", "|---|---|---|---|---|"]
    for row in result["by_bin"]:
        lines.append(
            f"| {row['bin']} | {row['matching']} | {row['queries']} | {100 * row['rank-1']:.1f} | "
            f"{100 * row['mAP']:.1f} |"
        )
    return "\n".join(lines)


def image_dependence(pipeline, clean: list, occluded: list) -> dict:
    """How image-dependent the masks are: `occluded[i]` is `clean[i]` with an occluder pasted on.

    Besides the masks' range, it compares a mask's move under occlusion, mean |m(occluded) − m(clean)|, with the
    distance between two persons' clean masks (each against the next query's). It also splits the generator's
    logits (the input of its final sigmoid) into the part shared by every image (the mean over images, per
    dimension) and the per-image rest, and reports the final layer's input: a positive input that varies little
    between images turns the layer's weights into a bias. A mask can select an occlusion's subspace only through the
    per-image part.
    """
    if len(clean) != len(occluded) or len(clean) < 2:
        raise ValueError(f"need two equal lists of at least two records; got {len(clean)} clean, {len(occluded)}")
    if [r.pid for r in clean] != [r.pid for r in occluded]:
        raise ValueError("occluded[i] must be the occluded copy of clean[i] (their identities differ)")
    if len({r.pid for r in clean}) < 2:
        raise ValueError("need at least two identities, to compare a mask with another person's")
    generator = pipeline.model.mask_generator
    if generator is None:
        raise ValueError("this checkpoint has no mask generator")
    inputs = []
    hook = generator.fc.register_forward_hook(lambda module, args, out: inputs.append(args[0].detach().float().cpu()))
    try:
        masks_clean = pipeline.embed_records(clean).masks
        masks_occluded = pipeline.embed_records(occluded).masks
    finally:
        hook.remove()
    with torch.no_grad():
        features = torch.cat(inputs)
        fc = generator.fc
        logits = torch.nn.functional.linear(features, fc.weight.float().cpu(), fc.bias.float().cpu()).numpy()
    shared = logits.mean(axis=0)
    n = len(clean)
    others = [next(j % n for j in range(i + 1, i + n) if clean[j % n].pid != clean[i].pid) for i in range(n)]
    return {
        "queries": len(clean),
        "mask_min": float(masks_clean.min()),
        "mask_max": float(masks_clean.max()),
        "active_fraction": float((masks_clean > 0.5).mean()),
        "move_with_occlusion": float(np.abs(masks_occluded - masks_clean).mean()),
        "distance_to_other_person": float(np.abs(masks_clean - masks_clean[others]).mean()),
        "shared_logit_spread": float(shared.std()),  # across dimensions: how differently dimensions are weighted
        "per_image_logit_spread": float((logits - shared).std(axis=0).mean()),  # across images, per dimension
        "input_mean": float(features.mean()),  # the final layer's input (pooled maps)
        "input_spread": float(features.std(dim=0, unbiased=False).mean()),  # across images, per channel
    }


def format_dependence(result: dict) -> str:
    r = result
    ratio = r["per_image_logit_spread"] / max(r["shared_logit_spread"], 1e-12)
    return "\n".join(
        [
            f"{r['queries']} query pairs (clean, occluded copy): masks {r['mask_min']:.2f}–{r['mask_max']:.2f}, "
            f"{100 * r['active_fraction']:.0f} % of dimensions above 0.5",
            f"mean |m(occluded) − m(clean)| = {r['move_with_occlusion']:.4f}; "
            f"mean |m(person) − m(another person)| = {r['distance_to_other_person']:.4f}",
            f"generator logits: spread of the part every image shares (std over dimensions) "
            f"{r['shared_logit_spread']:.3f}; per-image part (std over images) {r['per_image_logit_spread']:.4f} "
            f"({100 * ratio:.1f} % of the shared spread)",
            f"the final layer's input: mean {r['input_mean']:.3f}, std over images {r['input_spread']:.3f} per channel",
        ]
    )
