"""Speed benchmarks that print tables: extraction, masked retrieval, training throughput.

`python -m dpmpp bench speed [--quick] [--json] [--device D]`. Medians of repeats with their spread (max − min);
random weights, since speed does not depend on what the weights are.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Callable

import numpy as np
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
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            prepared_s, _ = timed(prepared_masked, device, repeats)
            # GPU: measured peak above what was allocated before; CPU: the score matrix it must hold.
            peak_mb = (
                (torch.cuda.max_memory_allocated(device) - base) if device.type == "cuda" else count * size * 4
            ) / 2**20
            row = {
                "gallery": size,
                "queries": count,
                "plain_ms": 1000 * plain_s,
                "masked_ms": 1000 * masked_s,
                "prepared_ms": 1000 * prepared_s,
                "peak_mb": peak_mb,
                "peak_measured": device.type == "cuda",
                "masked_over_plain": prepared_s / plain_s,
                "unprepared_over_plain": masked_s / plain_s,
                "spread_ms": 1000 * spread,
            }
            if size * count <= loop_limit:
                loop_s, _ = timed(loop, device, max(1, repeats // 2))
                row.update(loop_ms=1000 * loop_s, loop_over_masked=loop_s / prepared_s)
            rows.append(row)
    return rows


def clustered_gallery(path, count: int, dim: int, identities: int, seed: int = 0, chunk: int = 100_000):
    """A synthetic float16 memory-mapped gallery: identity centres plus noise (re-ID features cluster by identity)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(identities, dim)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(count, dim))
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        block = centres[rng.integers(0, identities, n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
        out[start : start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    out.flush()
    return np.load(path, mmap_mode="r"), centres, rng


def exact_masked_top10(gallery, queries: np.ndarray, masks: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    """Exact masked top-10 over a memory-mapped gallery, chunk by chunk. [Q, 10] indices."""
    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), 0), np.int64)
    q, m = torch.from_numpy(queries).float(), torch.from_numpy(masks).float()
    for start in range(0, len(gallery), chunk):
        block = MaskedGallery(np.asarray(gallery[start : start + chunk], dtype=np.float32)).scores(q, m).numpy()
        scores = np.concatenate([best_scores, block], axis=1)
        ids = np.concatenate([best_ids, np.arange(start, start + block.shape[1])[None].repeat(len(q), 0)], axis=1)
        keep = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        best_scores, best_ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(ids, keep, 1)
    return best_ids


def bench_ann(sizes: list[int], queries: int, dim: int, workdir) -> list[dict]:
    """Approximate candidates + exact masked re-scoring vs exact masked search: recall@10 and ms per query."""
    from pathlib import Path

    from dpmpp.eval.ann import ApproximateMaskedIndex

    rows = []
    for size in sizes:
        path = Path(workdir) / f"gallery_{size}.npy"
        gallery, centres, rng = clustered_gallery(path, size, dim, identities=max(size // 100, 10))
        query = centres[rng.integers(0, len(centres), queries)] + 0.6 * rng.normal(size=(queries, dim))
        masks = rng.random((queries, dim))
        start = time.perf_counter()
        exact = exact_masked_top10(gallery, query, masks)
        exact_ms = 1000 * (time.perf_counter() - start) / queries
        start = time.perf_counter()
        index = ApproximateMaskedIndex(gallery)
        build_s = time.perf_counter() - start
        for nprobe, candidates in ((32, 500), (64, 1000)):
            index.index.nprobe = nprobe
            start = time.perf_counter()
            found, _ = index.search(query, masks, top_k=10, candidates=candidates)
            ann_ms = 1000 * (time.perf_counter() - start) / queries
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))
            rows.append(
                {
                    "gallery": size,
                    "nlist": index.nlist,
                    "nprobe": nprobe,
                    "candidates": candidates,
                    "ann_recall_at_10": recall,
                    "ann_ms_per_query": ann_ms,
                    "exact_ms_per_query": exact_ms,
                    "speedup": exact_ms / ann_ms,
                    "build_s": build_s,
                    "gallery_mb_float16": gallery.nbytes / 2**20,
                }
            )
        del index, gallery
        path.unlink()
    return rows


def bench_umap(sizes: list[int], dim: int = 256) -> list[dict]:
    """UMAP fit time by point count (the first fit also compiles numba), and the cached re-display."""
    import umap

    from dpmpp.explorer import PrototypeMap
    from dpmpp.viz.umap_plot import umap_figure

    rows = []
    rng = np.random.default_rng(0)
    for size in sizes:
        centres = rng.normal(size=(max(size // 50, 2), dim))
        points = (centres[rng.integers(0, len(centres), size)] + 0.5 * rng.normal(size=(size, dim))).astype(np.float32)
        start = time.perf_counter()
        reducer = umap.UMAP(n_neighbors=15, min_dist=0.1, metric="cosine", random_state=0)
        coords = reducer.fit_transform(points)
        fit_s = time.perf_counter() - start
        pids = rng.integers(0, 10, size)
        cached = PrototypeMap(
            coords,
            ["gallery"] * size,
            pids,
            np.arange(size),
            np.full(size, np.nan),
            np.full(size, np.nan),
            reducer,
            "",
            points,
            [""] * size,
        )
        start = time.perf_counter()
        umap_figure(cached, "identity").to_json()
        redisplay_s = time.perf_counter() - start
        rows.append({"points": size, "fit_s": fit_s, "cached_redisplay_s": redisplay_s})
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
    import tempfile

    results["umap"] = bench_umap([1_000] if quick else [1_000, 5_000, 20_000])

    with tempfile.TemporaryDirectory(prefix="dpmpp_ann_") as workdir:
        results["ann"] = bench_ann([100_000] if quick else [100_000, 1_000_000], 100, 512, workdir)
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
        "| per-query loop | loop / masked | peak MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["retrieval"]:
        loop = f"{r['loop_ms']:.1f} | {r['loop_over_masked']:.0f}×" if "loop_ms" in r else "— | —"
        lines.append(
            f"| {r['gallery']:,} | {r['queries']} | {r['plain_ms']:.2f} | {r['prepared_ms']:.2f} | "
            f"{r['masked_over_plain']:.2f}× | {r['masked_ms']:.2f} | {loop} | "
            f"{r['peak_mb']:.0f}{'' if r['peak_measured'] else ' (scores only)'} |"
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
    lines += [
        "",
        "UMAP (cosine, 15 neighbours; a fresh process compiles numba on its first fit of each size class)",
        "| points | fit (s) | cached re-display (s) |",
        "|---|---|---|",
    ]
    for r in results.get("umap", []):
        lines.append(f"| {r['points']:,} | {r['fit_s']:.1f} | {r['cached_redisplay_s']:.3f} |")
    lines += [
        "",
        "large galleries: IVF candidates + exact masked re-scoring vs exact masked search "
        "(synthetic clustered float16 gallery, uniform random masks, 100 queries)",
        "| gallery | nlist | nprobe | candidates | recall@10 | ms / query | exact ms / query | speed-up | build s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.get("ann", []):
        lines.append(
            f"| {r['gallery']:,} | {r['nlist']} | {r['nprobe']} | {r['candidates']} | "
            f"{r['ann_recall_at_10']:.3f} | {r['ann_ms_per_query']:.2f} | {r['exact_ms_per_query']:.1f} | "
            f"{r['speedup']:.0f}× | {r['build_s']:.0f} |"
        )
    return "\n".join(lines)
