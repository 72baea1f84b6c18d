"""Run by tests/test_training.py under torchrun: train a few steps with DDP and save this rank's weights."""

import sys
from pathlib import Path

import torch.distributed as dist
from safetensors.torch import save_file

from dpmpp.config import apply_overrides, load_preset
from dpmpp.engine.train import Trainer
from tests.conftest import FAST


def main(data: str, out: str) -> None:
    config = apply_overrides(load_preset("tiny"), FAST + ["data.num_workers=0", "train.epochs=1"])
    config.data.name, config.data.root = "manifest", data
    trainer = Trainer(config, Path(out) / "ckpt")
    trainer.run()
    rank = dist.get_rank()
    state = {k: v.detach().contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(state, str(Path(out) / f"rank{rank}.safetensors"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
