"""Speed benchmarks that print tables: extraction, masked retrieval, training throughput.

`python -m dpmpp bench speed [--quick] [--json] [--device D]`. Medians of repeats with their spread (max − min);
random weights, since speed does not depend on what the weights are.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from dpmpp.config import load_preset
from dpmpp.eval.distance import MaskedGallery, masked_cosine
from dpmpp.losses import loss_weights, stage2_losses
from dpmpp.model.dpmpp import build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1) -> tuple[float, float]:
    """(median seconds, spread) of `fn` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), max(times) - min(times)


def machine_info(device: torch.device) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def bench_extraction(preset: str, batch: int, device: torch.device, repeats: int) -> dict:
    """Images/s of DPM++ inference (features + mask) against open_clip's bare image encoder on the same input."""
    config = load_preset(preset)
    size = (config.data.height, config.data.width)
    model, _ = build_model(config.model, size, num_classes=10, with_text=False, load_pretrained=False, device=device)
    model.eval()
    images = torch.randn(batch, 3, *size, device=device)
    amp = device.type == "cuda"

    @torch.no_grad()
    def ours():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(images, extras=False)
            return F.normalize(out.proj.float(), dim=1), out.mask

    @torch.no_grad()
    def bare():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return model.encoder.visual(images)

    ours_s, ours_spread = timed(ours, device, repeats)
    bare_s, bare_spread = timed(bare, device, repeats)
    return {
        "preset": preset,
        "batch": batch,
        "dpmpp_img_s": batch / ours_s,
        "open_clip_img_s": batch / bare_s,
        "extract_overhead": ours_s / bare_s,
        "spread_s": max(ours_spread, bare_spread),
    }


def bench_retrieval(
    gallery_sizes: list[int],
    query_counts: list[int],
    dim: int,
    device: torch.device,
    repeats: int,
    loop_limit: int = 100_000_000,
) -> list[dict]:
    """Masked cosine vs plain cosine (one matmul, the floor) vs a per-query loop; top-10 included."""
    rows = []
    generator = torch.Generator().manual_seed(0)
    for size in gallery_sizes:
        gallery = F.normalize(torch.randn(size, dim, generator=generator), dim=1).to(device)
        for count in query_counts:
            queries = torch.randn(count, dim, generator=generator).to(device)
            masks = torch.rand(count, dim, generator=generator).to(device)

            prepared = MaskedGallery(gallery)

            def prepared_masked(queries=queries, masks=masks, prepared=prepared):
                return prepared.scores(queries, masks).topk(10, dim=1)

            def plain(queries=queries, gallery=gallery):
                return (F.normalize(queries, dim=1) @ gallery.T).topk(10, dim=1)

            def masked(queries=queries, masks=masks, gallery=gallery):
                return masked_cosine(queries, masks, gallery).topk(10, dim=1)

            def loop(queries=queries, masks=masks, gallery=gallery):  # the public DPM code: a query at a time
                for q, m in zip(queries, masks):
                    gated = F.normalize(gallery * m, dim=1)
                    (gated @ F.normalize(q, dim=0)).topk(10)

            plain_s, _ = timed(plain, device, repeats)
            masked_s, spread = timed(masked, device, repeats)
            prepared_s, _ = timed(prepared_masked, device, repeats)
            row = {
                "gallery": size,
                "queries": count,
                "plain_ms": 1000 * plain_s,
                "masked_ms": 1000 * masked_s,
                "prepared_ms": 1000 * prepared_s,
                "masked_over_plain": prepared_s / plain_s,
                "unprepared_over_plain": masked_s / plain_s,
                "spread_ms": 1000 * spread,
            }
            if size * count <= loop_limit:
                loop_s, _ = timed(loop, device, max(1, repeats // 2))
                row.update(loop_ms=1000 * loop_s, loop_over_masked=loop_s / prepared_s)
            rows.append(row)
    return rows


def bench_training(preset: str, batch: int, device: torch.device, steps: int) -> dict:
    """Training images/s of stage 2 (forward, all losses, backward, Adam step) on random images."""
    config = load_preset(preset)
    size = (config.data.height, config.data.width)
    num_classes = max(batch // 4, 2)
    model, _ = build_model(config.model, size, num_classes, with_text=False, load_pretrained=False, device=device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    images = torch.randn(batch, 3, *size, device=device)
    labels = torch.arange(num_classes, device=device).repeat_interleave(4)[:batch]
    weights = loss_weights(config.loss)
    amp = device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(images, extras=True)
        losses = stage2_losses(
            out, labels, config.loss, prototypes=model.prototypes, text_prototypes=model.text_prototypes
        )
        total = sum(weights[k] * v for k, v in losses.items())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    seconds, spread = timed(step, device, steps, warmup=2)
    return {
        "preset": preset,
        "batch": batch,
        "train_img_s": batch / seconds,
        "step_ms": 1000 * seconds,
        "spread_ms": 1000 * spread,
        "amp_bf16": amp,
    }


def run(quick: bool, device: torch.device) -> dict:
    repeats = 3 if quick else 5
    results = {"machine": machine_info(device)}
    presets = ["tiny"] if quick else ["tiny", "vit_b16"]
    batch = 64 if device.type == "cuda" else 32
    results["extraction"] = [bench_extraction(p, batch, device, repeats) for p in presets]
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000, 1_000_000]
    results["retrieval"] = bench_retrieval(sizes, [1, 100, 1000], 512, device, repeats)
    results["training"] = [bench_training(p, batch, device, 3 if quick else 5) for p in presets]
    results["extract_overhead"] = {r["preset"]: r["extract_overhead"] for r in results["extraction"]}
    return results


def format_tables(results: dict) -> str:
    lines = [
        f"machine: {results['machine']}",
        "",
        "feature extraction (images/s)",
        "| preset | batch | DPM++ (features + mask) | bare open_clip | overhead |",
        "|---|---|---|---|---|",
    ]
    for r in results["extraction"]:
        lines.append(
            f"| {r['preset']} | {r['batch']} | {r['dpmpp_img_s']:.0f} | {r['open_clip_img_s']:.0f} | "
            f"{r['extract_overhead']:.2f}× |"
        )
    lines += [
        "",
        "masked retrieval, top-10 included (ms)",
        "| gallery | queries | plain cosine | masked, prepared gallery | masked / plain | masked_cosine() "
        "| per-query loop | loop / masked |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["retrieval"]:
        loop = f"{r['loop_ms']:.1f} | {r['loop_over_masked']:.0f}×" if "loop_ms" in r else "— | —"
        lines.append(
            f"| {r['gallery']:,} | {r['queries']} | {r['plain_ms']:.2f} | {r['prepared_ms']:.2f} | "
            f"{r['masked_over_plain']:.2f}× | {r['masked_ms']:.2f} | {loop} |"
        )
    lines += [
        "",
        "training throughput, stage 2 (images/s)",
        "| preset | batch | images/s | step (ms) | bf16 |",
        "|---|---|---|---|---|",
    ]
    for r in results["training"]:
        lines.append(
            f"| {r['preset']} | {r['batch']} | {r['train_img_s']:.1f} | {r['step_ms']:.0f} | {r['amp_bf16']} |"
        )
    return "\n".join(lines)
