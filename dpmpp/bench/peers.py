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

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from dpmpp.config import Config
from dpmpp.data.dataset import ImageDataset
from dpmpp.data.datasets import load_split
from dpmpp.data.samplers import PKBatchSampler
from dpmpp.data.transforms import build_transforms
from dpmpp.eval.extract import evaluate_similarity, records_loader
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


@torch.no_grad()
def _features(model: torch.nn.Module, records, transform, device: torch.device) -> torch.Tensor:
    model.eval()
    loader = records_loader(records, transform, 128)
    return torch.cat([F.normalize(model(b["image"].to(device)), dim=1).cpu() for b in loader])


def train_osnet(config: Config, seed: int, epochs: int, device: torch.device | None = None) -> tuple[dict, dict, float]:
    """Train OSNet-x0.25 with `config.data`'s batches for `epochs`; -> (occluded, holistic, train seconds)."""
    torchreid = _torchreid()
    device = device or torch.device("cpu")
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    data = config.data
    split = load_split("pets09_occ", ASSETS / "pets09_occ")
    pid_map = {pid: i for i, pid in enumerate(sorted({r.pid for r in split.train}))}
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
    results = []
    for name in ("pets09_occ", "pets09_holistic"):
        test = load_split(name, ASSETS / "pets09_occ")
        query = _features(model, test.query, test_transform, device)
        gallery = _features(model, test.gallery, test_transform, device)
        results.append(evaluate_similarity(test, (query @ gallery.T).numpy()).summary())
    return results[0], results[1], seconds
