"""Two-stage DPM++ training: stage 1 learns per-identity text prototypes, stage 2 the masked metric."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from dpmpp.config import Config
from dpmpp.data.dataset import ImageDataset
from dpmpp.data.datasets import load_split
from dpmpp.data.foreground import PersonMasks
from dpmpp.data.patch_transfer import SaliencyPatchTransfer, compose, patch_fraction
from dpmpp.data.records import Split
from dpmpp.data.samplers import PKBatchSampler
from dpmpp.data.transforms import build_transforms
from dpmpp.engine import checkpoint
from dpmpp.engine.distributed import DistInfo, barrier, init_distributed, resolve_device
from dpmpp.engine.loop import ProgressEvent, Stage, run_stage
from dpmpp.eval.extract import evaluate_features, extract, records_loader
from dpmpp.losses import loss_weights, stage1_losses, stage2_losses
from dpmpp.model.dpmpp import DPMPP, TextBranch, build_model
from dpmpp.model.peers import load_peer
from dpmpp.paths import default_root

logger = logging.getLogger(__name__)
COMPANION_SPLITS = {"pets09_occ": "pets09_holistic"}  # also reported at the end of training


def data_root(config: Config) -> Path:
    root = config.data.root or default_root(config.data.name)
    if root is None:
        raise ValueError(f"data.root is required for dataset {config.data.name!r}")
    return Path(root)


def num_cameras_of(split: Split) -> int:
    return max(r.camid for r in split.train + split.query + split.gallery) + 1


CLASS_IGNORING = (True, False, "auto")


def class_ignoring_active(setting, silhouettes: bool) -> bool:
    """Whether a mixed sample's partner identity is ignored (SPT's class-ignoring) in this training.

    Class-ignoring exists because the pasted pixels may show the partner's person, and then the partner's identity
    is in the image. "auto" trusts that premise only when the learnt saliency head chose what was pasted: guided by
    the dataset's person silhouettes, the pasted pixels lie outside the partner's person by construction (on
    pets09_occ a median 7 % of it, and under 1 % of mixed samples carry a quarter or more), and ignoring the
    partner would only drop valid supervision: its logit from every cross-entropy and its images (22 % of the
    batch's negatives) from the triplet. `python -m dpmpp bench transfer` measures both.
    """
    if setting not in CLASS_IGNORING or not isinstance(setting, (bool, str)):
        raise ValueError(f'aug.class_ignoring must be true, false or "auto"; got {setting!r}')
    return (not silhouettes) if setting == "auto" else bool(setting)


def _seed_epoch(seed: int, epoch: int, stage_index: int) -> None:
    # Re-seeding at every epoch boundary makes a resumed run repeat the uninterrupted one exactly.
    torch.manual_seed(seed * 1_000_003 + stage_index * 10_007 + epoch)


class Trainer:
    """Builds data, model and stages from a Config and runs them, checkpointing into `out_dir`."""

    def __init__(
        self,
        config: Config,
        out_dir: str | Path,
        device: str | None = None,
        callback: Callable[[ProgressEvent], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        config.validate()  # configs built in code (the app's jobs) are checked as loaded ones are
        self.config, self.out_dir = config, Path(out_dir)
        self.dist: DistInfo = init_distributed(device)
        self.device = resolve_device(device, self.dist)
        self.callback = callback if self.dist.is_main else None
        self.should_stop = should_stop
        self.record_grad_norms = False  # stage-2 step events carry each group's gradient norm (`bench grads`)
        # per stage-2 epoch (0-based) while patch transfer is active: [images mixed, images seen, highest guide value]
        self.transfer_counts: dict[int, list[float]] = {}
        self.transfer_log: list[dict] = []  # what end_of_epoch made of them, saved in metrics.json
        torch.manual_seed(config.train.seed)
        self.split = load_split(config.data.name, data_root(config))
        if not self.split.train:
            raise ValueError(f"{config.data.name} has no training images")
        if self.split.camid_is_track and config.model.camera_embedding:
            raise ValueError(
                f"{config.data.name}: camera ids are track ids here, and every track is one person, so a camera "
                "embedding (SIE) would hand the model the identity. Set model.camera_embedding=false."
            )
        self.pid_map = self.split.train_pid_map()
        image_size = (config.data.height, config.data.width)
        self.model, self.text = build_model(
            config.model, image_size, len(self.pid_map), num_cameras_of(self.split), device=self.device
        )
        self.meta = {
            "num_classes": len(self.pid_map),
            "num_cameras": num_cameras_of(self.split),
            "image_size": list(image_size),
            "dataset": config.data.name,
            "pids": sorted(self.pid_map),
            "train_images": len(self.split.train),
        }
        if config.train.init_checkpoint:
            skipped = checkpoint.load_compatible_weights(config.train.init_checkpoint, self.model)
            logger.info("initialised from %s; kept fresh: %s", config.train.init_checkpoint, skipped)
        self.test_transform = build_transforms(*image_size, train=False)
        self.history: list[dict] = []
        self.train_seconds = 0.0

    # ----- stage 1: text prototypes -------------------------------------------------------------------------
    def stage1(self) -> Stage:
        cfg = self.config.train
        loader = records_loader(self.split.train, self.test_transform, 64, self.config.data.num_workers)
        image_feats = _image_features(self.model, loader, self.device)  # frozen encoder: computed once
        labels = torch.tensor([self.pid_map[r.pid] for r in self.split.train], device=self.device)
        for p in self.text.parameters():
            p.requires_grad_(False)
        self.text.prompts.ctx.requires_grad_(True)
        optimizer = torch.optim.Adam([self.text.prompts.ctx], lr=cfg.stage1_lr, weight_decay=cfg.stage1_weight_decay)
        batch_size = cfg.stage1_batch_size
        steps = max(len(labels) // batch_size, 1)

        def batches(epoch: int):
            _seed_epoch(cfg.seed, epoch, 1)
            order = torch.randperm(len(labels)).to(self.device)
            return (order[i * batch_size : (i + 1) * batch_size] for i in range(steps))

        def compute(index: torch.Tensor):
            self.text.train()
            text_feats = self.text(labels[index])
            return stage1_losses(image_feats[index], text_feats, labels[index]), len(index), None

        return Stage(
            "stage1",
            cfg.stage1_epochs,
            steps,
            optimizer,
            batches,
            compute,
            loss_weights(self.config.loss),
            warmup_epochs=cfg.stage1_warmup_epochs,
            schedule="cosine",
        )

    @torch.no_grad()
    def finish_stage1(self) -> None:
        self.text.eval()
        self.model.set_text_prototypes(self.text().detach())

    # ----- stage 2: dynamic masked metric -------------------------------------------------------------------
    def parameter_groups(self) -> list[dict]:
        """Adam's groups: the encoder, the heads (larger rate), and the saliency head on its own, which is clipped
        apart from the global gradient norm when `train.clip_saliency_apart` (the default)."""
        cfg, model = self.config.train, self.model
        head_modules = [m for m in (model.mask_generator, model.encoder.camera, model.neck) if m is not None]
        head = [p for m in head_modules for p in m.parameters() if p.requires_grad]
        if model.prototypes is not None:
            head.append(model.prototypes)
        saliency = [p for p in model.saliency_head.parameters() if p.requires_grad] if model.saliency_head else []
        taken = {id(p) for p in head + saliency}
        encoder = [p for p in model.encoder.parameters() if id(p) not in taken and p.requires_grad]
        groups = [
            {"name": "encoder", "params": encoder, "lr": cfg.lr_encoder, "weight_decay": cfg.weight_decay},
            {"name": "head", "params": head, "lr": cfg.lr_head, "weight_decay": cfg.weight_decay},
        ]
        if saliency:  # the head trains on detached tokens; under one global norm its gradients would still scale
            # every other parameter's step whenever clipping acts
            groups.append(
                {
                    "name": "saliency",
                    "params": saliency,
                    "lr": cfg.lr_head,
                    "weight_decay": cfg.weight_decay,
                    "clip_apart": cfg.clip_saliency_apart,
                }
            )
        return groups

    def stage2(self) -> Stage:
        cfg, data, aug = self.config.train, self.config.data, self.config.aug
        dataset = ImageDataset(
            self.split.train,
            build_transforms(
                data.height,
                data.width,
                train=True,
                flip_prob=data.flip_prob,
                pad=data.pad,
                erasing_prob=data.erasing_prob,
            ),
            self.pid_map,
            self.person_masks(),
        )
        sampler = PKBatchSampler(
            [r.pid for r in self.split.train],
            data.num_pids,
            data.num_instances,
            cfg.seed,
            self.dist.world_size,
            self.dist.rank,
        )
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=data.num_workers,
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
        )
        generator = torch.Generator()
        patch = self.model.encoder.patch_size
        transfer = SaliencyPatchTransfer.from_config(
            aug, aug.patch_transfer and self.model.saliency_head is not None, tuple(patch), generator
        )
        for p in self.model.parameters():
            p.requires_grad_(True)
        if self.model.neck is not None:
            self.model.neck.bias.requires_grad_(False)
        if self.config.model.frozen_stages:
            frozen = self.model.encoder.freeze_stages(self.config.model.frozen_stages)
            logger.info("encoder: %d parameters of the first %d stages fixed", frozen, self.config.model.frozen_stages)
        optimizer = torch.optim.Adam(self.parameter_groups())
        network = self.model
        if self.dist.enabled:
            network = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        use_amp = cfg.amp and self.device.type == "cuda"
        epoch_box = [0]

        def batches(epoch: int):
            _seed_epoch(cfg.seed, epoch, 2)
            generator.manual_seed(cfg.seed * 7919 + epoch)
            sampler.set_epoch(epoch)
            epoch_box[0] = epoch
            return loader

        teacher = self.teacher_features()
        # T is frozen in stage 2: what the alignment term pulls W toward is computed once.
        align_targets = self.model.prototype_targets() if self.model.text_prototypes is not None else None

        def compute(batch: dict):
            self.model.train()
            images, pids = batch["image"].to(self.device), batch["pid"].to(self.device)
            camids = batch["camid"].to(self.device)
            mixed = partner_pid = None
            person = batch["person"].to(self.device) if "person" in batch else None  # [B, 1, H, W]
            if transfer.enabled and epoch_box[0] >= aug.warmup_epochs:
                silhouettes = person is not None and aug.saliency_source == "auto"
                guide = patch_fraction(person, patch) if silhouettes else self.model.saliency(images, camids)
                result = transfer(images, guide, pids)
                images, mixed = result.images, result.mixed
                counts = self.transfer_counts.setdefault(epoch_box[0], [0, 0, 0.0])
                counts[0] += int(mixed.sum())
                counts[1] += len(images)
                counts[2] = max(counts[2], float(guide.max()))
                partner_pid = result.partner_pid if class_ignoring_active(aug.class_ignoring, silhouettes) else None
                if person is not None:  # the mixed image's person mask, composed like its pixels
                    person = compose(person, result.partner, result.shift, result.region, tuple(patch))
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = network(images, camids, extras=True)
            losses = stage2_losses(
                out,
                pids,
                self.config.loss,
                prototypes=self.model.prototypes,
                text_prototypes=self.model.text_prototypes,
                align_targets=align_targets,
                mixed=mixed,
                partner_pid=partner_pid,
                holistic_positives=aug.holistic_positives,
                person=patch_fraction(person, patch) if person is not None else None,
                teacher=teacher[batch["index"]].to(self.device) if teacher is not None else None,
            )
            logits = out.masked_logits if out.masked_logits is not None else out.logits
            accuracy = float((logits.argmax(1) == pids).float().mean()) if logits is not None else None
            return losses, len(images), accuracy

        def on_epoch_end(epoch: int) -> dict | None:
            return self.end_of_epoch(epoch, optimizer)

        return Stage(
            "stage2",
            cfg.epochs,
            len(sampler),
            optimizer,
            batches,
            compute,
            loss_weights(self.config.loss),
            warmup_epochs=cfg.warmup_epochs,
            schedule=cfg.schedule,
            milestones=cfg.milestones,
            gamma=cfg.gamma,
            grad_clip=cfg.grad_clip,
            on_epoch_end=on_epoch_end,
            record_grad_norms=self.record_grad_norms,
        )

    def teacher_features(self) -> torch.Tensor | None:
        """The distillation teacher's unit features of every clean training crop [N, D] (computed once), or None."""
        loss = self.config.loss
        if loss.distill_weight <= 0:  # Config.validate() has checked that a positive weight names a teacher
            return None
        started = time.perf_counter()
        features = load_peer(loss.distill_teacher).embed([r.path for r in self.split.train])
        logger.info(
            "teacher %s: %d training crops in %.1f s",
            loss.distill_teacher,
            len(features),
            time.perf_counter() - started,
        )
        return torch.from_numpy(features)

    def person_masks(self) -> PersonMasks | None:
        """The dataset's person masks, when it has them and the saliency head or patch transfer will use them."""
        aug, loss = self.config.aug, self.config.loss
        class_ignoring_active(aug.class_ignoring, False)  # a bad value fails here, before any training
        if aug.saliency_source not in ("auto", "head"):
            raise ValueError(f"aug.saliency_source must be 'auto' or 'head'; got {aug.saliency_source!r}")
        if self.model.saliency_head is None:
            return None
        wanted = aug.saliency_source == "auto" or loss.saliency_person_weight > 0
        return PersonMasks.for_root(data_root(self.config), aug.nearer_persons_occlude) if wanted else None

    # ----- evaluation and checkpoints -----------------------------------------------------------------------
    def evaluate(self, split: Split | None = None) -> dict:
        split = split or self.split
        eval_cfg = self.config.eval
        q_feats, q_masks = extract(
            self.model, records_loader(split.query, self.test_transform, eval_cfg.batch_size), self.device
        )
        g_feats, g_masks = extract(
            self.model, records_loader(split.gallery, self.test_transform, eval_cfg.batch_size), self.device
        )
        result = {}
        for label, use_mask in (("masked", True), ("unmasked", False)):
            if use_mask and q_masks is None:
                continue
            metrics = evaluate_features(split, q_feats, q_masks, g_feats, g_masks, use_mask, eval_cfg.symmetric)
            result[label] = metrics.summary()
        return result

    def end_of_epoch(self, epoch: int, optimizer: torch.optim.Optimizer) -> dict | None:
        cfg = self.config.train
        self.train_seconds += time.perf_counter() - self._epoch_started
        self._epoch_started = time.perf_counter()
        metrics = None
        last = epoch == cfg.epochs
        self.log_transfer(epoch)
        if self.dist.is_main:
            if (cfg.eval_every and epoch % cfg.eval_every == 0) or last:
                metrics = {"epoch": epoch, self.config.data.name: self.evaluate()}
                self.history.append(metrics)
            if last or epoch % max(cfg.checkpoint_every, 1) == 0:
                self.save(stage="stage2", epoch=epoch, optimizer=optimizer)
        barrier(self.dist)
        return metrics

    def log_transfer(self, epoch: int) -> None:
        """How much of stage-2 epoch `epoch` (1-based) patch transfer mixed, logged and kept for metrics.json. An
        epoch where it was active and mixed nothing is warned about: the guide never reached the binarisation
        threshold, so the run is, in effect, one without patch transfer (and without pairing)."""
        counts = self.transfer_counts.get(epoch - 1)
        if counts is None:
            return
        mixed, seen, peak = counts
        entry = {"epoch": epoch, "mixed": round(mixed / max(seen, 1), 4), "guide_max": round(peak, 4)}
        self.transfer_log.append(entry)
        aug = self.config.aug
        if mixed:
            logger.info("stage 2 epoch %d: patch transfer mixed %.1f %% of the images", epoch, 100 * entry["mixed"])
        elif aug.saliency_top is None and peak <= aug.saliency_threshold:
            logger.warning(
                "stage 2 epoch %d: patch transfer is on but mixed none of %d images: the saliency guide never "
                "exceeded aug.saliency_threshold=%.2f (its highest value was %.3f), so no person mask was found; "
                "aug.saliency_top binarises by each map's highest share instead",
                epoch,
                seen,
                aug.saliency_threshold,
                peak,
            )
        else:
            logger.warning(
                "stage 2 epoch %d: patch transfer is on but mixed none of %d images (aug.transfer_prob=%.2f)",
                epoch,
                seen,
                aug.transfer_prob,
            )

    def save(
        self, stage: str, epoch: int, optimizer: torch.optim.Optimizer | None = None, final: dict | None = None
    ) -> None:
        metrics = {
            "history": self.history,
            "train_seconds": round(self.train_seconds, 1),
            **({"patch_transfer": self.transfer_log} if self.transfer_log else {}),
            "stage": stage,
            "epoch": epoch,
            **(final or {}),
        }
        checkpoint.save_model(self.out_dir, self.model, self.config, self.meta, metrics)
        state = {
            "stage": stage,
            "epoch": epoch,
            "train_seconds": self.train_seconds,
            "optimizer": optimizer.state_dict() if optimizer is not None else {},
        }
        checkpoint.save_train_state(self.out_dir, state)

    def run(self, resume: bool = False) -> dict:
        state = checkpoint.load_train_state(self.out_dir) if resume else None
        if resume and state is None:
            logger.warning("nothing to resume in %s; starting from scratch", self.out_dir)
        if state is not None:
            checkpoint.load_weights(self.out_dir, self.model)
            self.train_seconds = float(state.get("train_seconds", 0.0))
            previous = checkpoint.read_config(self.out_dir)[0]
            if previous.to_dict() != self.config.to_dict():
                logger.warning("resuming with a config that differs from the one saved in %s", self.out_dir)
            metrics_path = self.out_dir / checkpoint.METRICS
            if metrics_path.is_file():
                import json

                saved = json.loads(metrics_path.read_text())
                self.history, self.transfer_log = saved.get("history", []), saved.get("patch_transfer", [])
        self._epoch_started = time.perf_counter()
        if self.config.model.use_text_stage and (state is None or state["stage"] == "stage1"):
            run_stage(self.stage1(), 0, self.callback, self.should_stop)
            self.finish_stage1()
            self.train_seconds += time.perf_counter() - self._epoch_started
            self._epoch_started = time.perf_counter()
            if self.dist.is_main:
                self.save(stage="stage2", epoch=0)
            barrier(self.dist)
            state = None
        stage = self.stage2()
        start_epoch = 0
        if state is not None and state["stage"] in ("stage2", "done"):
            start_epoch = int(state["epoch"])
            if state.get("optimizer"):
                stage.optimizer.load_state_dict(state["optimizer"])
        run_stage(stage, start_epoch, self.callback, self.should_stop)
        final = {}
        if self.dist.is_main:
            final = {"final": {self.config.data.name: self.evaluate()}}
            companion = COMPANION_SPLITS.get(self.config.data.name)
            if companion:
                final["final"][companion] = self.evaluate(load_split(companion, data_root(self.config)))
            self.save(stage="done", epoch=self.config.train.epochs, optimizer=stage.optimizer, final=final)
        barrier(self.dist)
        return final


@torch.no_grad()
def _image_features(model: DPMPP, loader: DataLoader, device: torch.device) -> torch.Tensor:
    """Unnormalised projected features p [N, E] (stage 1 uses raw dot products)."""
    model.eval()
    return torch.cat([model(b["image"].to(device), b["camid"].to(device), extras=False).proj for b in loader])


def train(
    config: Config,
    out_dir: str | Path,
    resume: bool = False,
    device: str | None = None,
    callback: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Train DPM++ as `config` says and write a checkpoint folder to `out_dir`; returns the final metrics."""
    return Trainer(config, out_dir, device, callback, should_stop).run(resume)


__all__ = ["train", "Trainer", "TextBranch"]
