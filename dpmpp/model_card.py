"""The model card of a checkpoint folder, as Markdown."""

from __future__ import annotations

import json
from pathlib import Path

from dpmpp.engine.checkpoint import METRICS, read_config, weights_hash


def model_card_markdown(checkpoint: str | Path) -> str:
    """A model card in Markdown: preset, training data and time, weights hash, switches, final metrics."""
    config, meta = read_config(checkpoint)
    metrics_path = Path(checkpoint) / METRICS
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    model = config.model
    encoder = (
        f"open_clip `{model.clip_model}`"
        if model.backbone == "clip"
        else f"`{model.backbone}` (text tower: open_clip `{model.clip_model}`, random init)"
    )
    lines = [
        f"### {Path(checkpoint).name}",
        f"- preset **{config.preset}**, {encoder} (pretrained: {model.pretrained or 'none, random init'}), "
        f"input {meta['image_size']}",
        f"- trained on **{meta.get('dataset')}**: {meta.get('train_images', '?')} images, "
        f"{meta['num_classes']} identities, {meta.get('num_cameras')} camera ids",
        f"- stage 1 {config.train.stage1_epochs} epochs, stage 2 {config.train.epochs} epochs, "
        f"{metrics.get('train_seconds', '?')} s of training; weights sha256 {weights_hash(checkpoint)}",
        f"- mask {'on' if config.model.use_mask else 'off'}, text stage "
        f"{'on' if config.model.use_text_stage else 'off'}, patch transfer "
        f"{_transfer(config.aug.patch_transfer, metrics.get('patch_transfer'))}, pairing "
        f"{'on' if config.aug.occlusion_pairing else 'off'}"
        f", class-ignoring {_class_ignoring(config.aug.class_ignoring)}",
    ]
    stopped = metrics.get("stopped_early")
    if stopped:
        lines.append(f"- **stopped early** at {stopped['stopped_at']}; the weights were saved at {stopped['saved']}")
    if config.loss.distill_weight > 0:
        lines.append(
            f"- distilled from `{config.loss.distill_teacher}` (its features of the clean training crops; weight "
            f"{config.loss.distill_weight}, temperature {config.loss.distill_temperature})"
        )
    for split, results in metrics.get("final", {}).items():
        for mode, m in results.items():
            lines.append(
                f"- {split}, {mode}: rank-1 {100 * m['rank1']:.1f}, mAP {100 * m['mAP']:.1f}, "
                f"mINP {100 * m['mINP']:.1f}"
            )
    across = metrics.get("across_seeds")
    if across:  # what a fresh training gives: the row's mean ± std, this checkpoint being one of its seeds
        lines.append(f"- mean ± std over seeds {', '.join(map(str, across['seeds']))} of the same recipe, masked:")
        for split, m in across["results"].items():
            lines.append(
                f"  - {split}: rank-1 {m['rank1'][0]:.1f} ± {m['rank1'][1]:.1f}, "
                f"mAP {m['mAP'][0]:.1f} ± {m['mAP'][1]:.1f}"
            )
    return "\n".join(lines)


def _transfer(enabled: bool, record: list[dict] | None) -> str:
    """Patch transfer as switched, and as it acted: a guide that never finds a person mixes nothing."""
    if not enabled:
        return "off"
    if not record:
        return "on (how much it mixed was not recorded)"
    shares = ", ".join(f"{100 * entry['mixed']:.0f} % in epoch {entry['epoch']}" for entry in record)
    return f"on, mixed {shares}" + (
        " (**never mixed**: trained on clean crops)" if not any(entry["mixed"] for entry in record) else ""
    )


def _class_ignoring(setting) -> str:
    if setting == "auto":
        return "auto (off where person silhouettes guide the transfer)"
    return "on" if setting else "off"
