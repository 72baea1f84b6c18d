"""A peer's code in the accuracy table: torchreid's OSNet-x0.25, trained from scratch on our crops.

The model, its losses (label-smoothed CE + batch-hard triplet, margin 0.3), its optimiser (AMSGrad, lr 0.0015,
the OSNet paper's from-scratch setting) and its cosine schedule all come from torchreid 0.2.5; the data
pipeline (P×K batches, input size, augmentation, epochs) and the evaluation are the ones every other row uses.
torchreid is a benchmark extra: `pip install -r bench/requirements.txt`.
"""

from __future__ import annotations

import random
import time
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from dpmpp.config import Config
from dpmpp.data.dataset import ImageDataset
from dpmpp.data.datasets import load_split
from dpmpp.data.images import load_image
from dpmpp.data.samplers import PKBatchSampler
from dpmpp.data.transforms import build_transforms
from dpmpp.paths import ASSETS

OSNET = "torchreid OSNet-x0.25 (from scratch)"


def _torchreid():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Cython evaluation is unavailable": we evaluate with our own code
            import torchreid
    except ImportError as error:
        raise RuntimeError(
            "the OSNet row needs torchreid 0.2.5 and its undeclared dependencies: "
            "`pip install -r bench/requirements.txt`"
        ) from error
    return torchreid


def train_osnet(
    config: Config, seed: int, epochs: int, device: torch.device | None = None
) -> tuple[Callable[[list[str]], np.ndarray], float]:
    """Train OSNet-x0.25 with `config.data`'s batches for `epochs`.

    Returns the trained model as a feature extractor (image paths -> unit features [N, 512]) and the seconds of
    training.
    """
    torchreid = _torchreid()
    device = device or torch.device("cpu")
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    data = config.data
    split = load_split("pets09_occ", ASSETS / "pets09_occ")
    pid_map = split.train_pid_map()
    train_transform = build_transforms(data.height, data.width, True, data.flip_prob, data.pad, data.erasing_prob)
    dataset = ImageDataset(split.train, train_transform, pid_map)
    sampler = PKBatchSampler([r.pid for r in split.train], data.num_pids, data.num_instances, seed)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=data.num_workers)

    model = torchreid.models.build_model("osnet_x0_25", len(pid_map), loss="triplet", pretrained=False).to(device)
    cross_entropy = torchreid.losses.CrossEntropyLoss(len(pid_map), use_gpu=device.type == "cuda", label_smooth=True)
    triplet = torchreid.losses.TripletLoss(margin=0.3)
    optimizer = torchreid.optim.build_optimizer(model, optim="amsgrad", lr=0.0015)
    scheduler = torchreid.optim.build_lr_scheduler(optimizer, lr_scheduler="cosine", max_epoch=epochs)

    started = time.perf_counter()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        model.train()
        for batch in loader:
            images, pids = batch["image"].to(device), batch["pid"].to(device)
            logits, feats = model(images)
            loss = cross_entropy(logits, pids) + triplet(feats, pids)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    seconds = time.perf_counter() - started

    test_transform = build_transforms(data.height, data.width, train=False)

    @torch.no_grad()
    def extract(paths: list[str]) -> np.ndarray:
        model.eval()
        feats = []
        for start in range(0, len(paths), 128):
            batch = torch.stack([test_transform(load_image(p)) for p in paths[start : start + 128]])
            feats.append(F.normalize(model(batch.to(device)), dim=1).cpu())
        return torch.cat(feats).numpy()

    return extract, seconds
