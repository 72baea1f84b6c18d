"""Gradio app over dpmpp: browse the bundled occluded benchmark and its ranked retrievals.

Run `python app.py` (127.0.0.1:7860). Model logic lives in dpmpp.api; this file only wires widgets.
"""

from __future__ import annotations

import argparse
import logging
import math
from functools import lru_cache
from pathlib import Path

import gradio as gr

from dpmpp.api import Pipeline
from dpmpp.data.datasets import load_split
from dpmpp.explorer import BenchmarkExplorer
from dpmpp.paths import ASSETS, DEFAULT_CHECKPOINT
from dpmpp.viz.rank_strip import rank_strip

logger = logging.getLogger("dpmpp.app")
DATA_NOTE = (
    "Data: PETS 2009 S2.L1 (© University of Reading; Ferryman & Shahrokni, PETS 2009) with MOTChallenge 2015 boxes "
    "(Leal-Taixé et al., arXiv:1504.01942), cut into the `pets09_occ` benchmark: occluded queries, holistic gallery, "
    "a true match must come from another appearance (track) of the same person."
)
HOW_TO_READ = (
    "Blue: the query. Green: same person, red: another person. Gallery crops of the same person *and* the same track "
    "are hidden, as in the metric: finding the same track again is tracking, not re-identification."
)


@lru_cache(maxsize=2)
def explorer_for(checkpoint: str | None) -> BenchmarkExplorer:
    """Heavy objects (model, gallery features) are cached per checkpoint, not kept in session state."""
    split = load_split("pets09_occ", ASSETS / "pets09_occ")
    pipeline = Pipeline.from_checkpoint(checkpoint, device="cpu") if checkpoint else None
    return BenchmarkExplorer(split, pipeline)


def query_choices(explorer: BenchmarkExplorer) -> list[tuple[str, int]]:
    """Queries labelled with person, occluder and AP; failures (lowest AP) first."""
    aps = explorer.metrics().ap.tolist()
    order = sorted(range(len(aps)), key=lambda i: (aps[i] if not math.isnan(aps[i]) else 2.0, i))
    labels = []
    for i in order:
        record = explorer.split.query[i]
        labels.append(
            (
                f"AP {aps[i]:.2f} · person {record.pid} · track {record.camid} · "
                f"{record.meta.get('occluder', '?')} {float(record.meta.get('occluded_fraction', 0)):.0%} hidden · "
                f"{Path(record.path).name}",
                i,
            )
        )
    return labels


def build_demo(checkpoint: str | None = None) -> gr.Blocks:
    explorer = explorer_for(checkpoint)

    def retrieve(query_index: int, top_k: int, use_mask: bool):
        if query_index is None:
            raise gr.Error("Pick a query first.")
        result = explorer_for(checkpoint).retrieve(int(query_index), int(top_k), bool(use_mask))
        strip = rank_strip(result.query_path, [(item.path, item.correct, item.score) for item in result.items])
        rank = f"first true match at rank {result.first_true_rank}" if result.first_true_rank else "no true match"
        summary = (
            f"**AP {result.ap:.3f}**, {rank}. {result.hidden} same-person same-track gallery crops hidden "
            f"(the metric ignores them too)."
        )
        return strip, summary

    with gr.Blocks(title="dpmpp — occluded re-ID explorer") as demo:
        gr.Markdown("# dpmpp — occluded person re-identification explorer")
        gr.Markdown(f"Model: **{explorer.model_name}**. {DATA_NOTE}")
        with gr.Row():
            query = gr.Dropdown(query_choices(explorer), label="Query (failures first)", elem_id="query")
            top_k = gr.Slider(1, 20, value=10, step=1, label="top-k")
            use_mask = gr.Checkbox(value=True, label="masked metric", interactive=explorer.pipeline is not None)
        button = gr.Button("Retrieve", variant="primary", elem_id="retrieve")
        strip = gr.Image(label="Ranked gallery", type="pil", elem_id="strip")
        summary = gr.Markdown(elem_id="summary")
        gr.Markdown(HOW_TO_READ)
        button.click(retrieve, [query, top_k, use_mask], [strip, summary], api_name="retrieve")
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the bundled model if present)")
    return parser.parse_args(argv)


def default_checkpoint() -> str | None:
    return str(DEFAULT_CHECKPOINT) if (DEFAULT_CHECKPOINT / "model.safetensors").is_file() else None


demo = None
if __name__ == "__main__":
    args = parse_args()
    logging.basicConfig(level=logging.INFO)
    demo = build_demo(args.checkpoint or default_checkpoint())
    demo.launch(
        server_name=args.host, server_port=args.port, share=False, allowed_paths=[str(ASSETS)], max_file_size="20mb"
    )
