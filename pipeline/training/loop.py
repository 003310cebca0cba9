"""The training loop: AdamW with warm-up and cosine decay, optional EMA and early stopping,
validation PSNR and a resumable checkpoint each epoch."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from pipeline.config import TrainParams
from pipeline.data.augment import paired_augmentation
from pipeline.data.dataset import Pair, PairDataset
from pipeline.errors import DemoireError
from pipeline.evaluation.metrics import batch_psnr
from pipeline.training.checkpoint import load_checkpoint, save_checkpoint
from pipeline.training.losses import Loss, multiscale_loss, weighted_loss
from pipeline.training.optim import make_optimizer, warmup_cosine

log = logging.getLogger(__name__)
TRAIN_STREAM = 0x5452414E  # "TRAN"
GRAD_CLIP_NORM = 0.5


@dataclass(frozen=True)
class EpochStats:
    """One row of the training history (declared as a DVC plot)."""

    epoch: int
    train_loss: float
    val_loss: float
    val_psnr: float
    seconds: float


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of one epoch's shuffling and augmentation: a resumed run replays the same epochs."""
    return int(hashlib.sha256(f"{seed}:{TRAIN_STREAM}:{epoch}".encode()).hexdigest()[:15], 16)


def make_train_loader(pairs: list[Pair], cfg: TrainParams, seed: int, device: torch.device) -> DataLoader:
    """Shuffled, augmented patches; order and crops depend only on `seed` (one per epoch)."""
    dataset = PairDataset(pairs, paired_augmentation(cfg.patch_size, seed))

    def seed_worker(worker_id: int) -> None:
        # Each worker holds a copy of the transform; without this they would all draw the same crops.
        torch.utils.data.get_worker_info().dataset.transform.set_random_seed(seed + worker_id + 1)

    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=len(pairs) >= cfg.batch_size,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=seed_worker if cfg.num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )


def training_fingerprint(cfg: TrainParams, seed: int, pairs: list[Pair]) -> str:
    """Digest of the params and training data: a checkpoint resumes only the run it came from."""
    digest = hashlib.sha256(json.dumps([cfg.model_dump(mode="json"), seed], sort_keys=True).encode())
    for moire, clean in pairs:
        digest.update(moire.tobytes())
        digest.update(clean.tobytes())
    return digest.hexdigest()


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (unless amp is off); full precision on CPU, where bf16 is slow."""
    if device.type == "cuda" and amp != "off":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def validate(model: nn.Module, pairs: list[Pair], loss_fn: Loss, device: torch.device, amp: str = "off") -> tuple[float, float]:
    """Mean loss and mean per-image PSNR over whole validation images."""
    model.eval()
    losses, psnrs = [], []
    for moire, clean in PairDataset(pairs):
        x, y = moire[None].to(device), clean[None].to(device)
        with autocast(device, amp):
            pred = model(x)
        pred = pred.float().clamp(0, 1)
        losses.append(float(loss_fn(pred, y)))
        psnrs.append(float(batch_psnr(pred, y).mean()))
    return sum(losses) / len(losses), sum(psnrs) / len(psnrs)


def _step_loss(model: nn.Module, moire: torch.Tensor, clean: torch.Tensor, loss_fn: Loss, cfg: TrainParams) -> torch.Tensor:
    """Training loss of one batch, with deep supervision when the model has several output scales."""
    if cfg.multiscale_weight > 0 and hasattr(model, "forward_multiscale"):
        outputs = [out.float() for out in model.forward_multiscale(moire)]
        return multiscale_loss(outputs, clean, loss_fn, cfg.multiscale_weight)
    return loss_fn(model(moire).float(), clean)


def train_model(
    model: nn.Module,
    train_pairs: list[Pair],
    val_pairs: list[Pair],
    cfg: TrainParams,
    seed: int,
    device: torch.device,
    checkpoint_path: Path,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> list[EpochStats]:
    """Train `model` in place for cfg.epochs and return the history of every epoch.

    A checkpoint after each epoch holds everything the next epoch depends on, so a killed run
    restarted with the same params and data (cfg.resume) continues where it stopped and ends with
    the same weights as an uninterrupted one. With EMA the final weights are the average; with
    early stopping they are those of the best validation epoch.
    """
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    loss_fn = weighted_loss(cfg.loss)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = len(make_train_loader(train_pairs, cfg, 0, device))
    schedule = warmup_cosine(optimizer, round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay)) if cfg.ema_decay > 0 else None
    trained = torch.compile(model) if cfg.compile else model
    fingerprint = training_fingerprint(cfg, seed, train_pairs)

    history: list[EpochStats] = []
    best = {"val_psnr": -math.inf, "epoch": 0, "weights": None}
    state = load_checkpoint(checkpoint_path, fingerprint) if cfg.resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        history = [EpochStats(**row) for row in state["history"]]
        best = state["best"]
        log.info("resuming from %s after epoch %d", checkpoint_path, len(history))

    for epoch in range(len(history) + 1, cfg.epochs + 1):
        if cfg.early_stop_patience and epoch - best["epoch"] > cfg.early_stop_patience:
            log.info("early stop: no better val PSNR than %.2f dB (epoch %d) for %d epochs",
                     best["val_psnr"], best["epoch"], cfg.early_stop_patience)
            break
        start = time.perf_counter()
        trained.train()
        total, count = 0.0, 0
        for step, (moire, clean) in enumerate(make_train_loader(train_pairs, cfg, epoch_seed(seed, epoch), device)):
            moire, clean = moire.to(device, non_blocking=True), clean.to(device, non_blocking=True)
            with autocast(device, cfg.amp):
                loss = _step_loss(trained, moire, clean, loss_fn, cfg)
            if not math.isfinite(loss.item()):
                raise DemoireError(
                    f"training diverged: loss is {loss.item()} at epoch {epoch}, step {step}; "
                    f"{checkpoint_path} keeps the last good epoch; lower train.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # Strong-moiré patches give rare huge gradients; unclipped, one can wreck the weights.
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
            optimizer.step()
            schedule.step()
            if ema is not None:
                ema.update_parameters(model)
            total += loss.item() * moire.shape[0]
            count += moire.shape[0]
        evaluated = ema.module if ema is not None else model
        val_loss, val_psnr = validate(evaluated, val_pairs, loss_fn, device, cfg.amp)
        stats = EpochStats(epoch, total / count, val_loss, val_psnr, time.perf_counter() - start)
        history.append(stats)
        if val_psnr > best["val_psnr"]:
            weights = copy.deepcopy(evaluated.state_dict()) if cfg.early_stop_patience else None
            best = {"val_psnr": val_psnr, "epoch": epoch, "weights": weights}
        save_checkpoint(checkpoint_path, {
            "fingerprint": fingerprint, "epoch": epoch, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "history": [asdict(row) for row in history], "best": best,
        })
        log.info("epoch %d/%d: train_loss %.5f val_loss %.5f val_psnr %.2f dB (%.1fs)",
                 epoch, cfg.epochs, stats.train_loss, val_loss, val_psnr, stats.seconds)
        if on_epoch is not None:
            on_epoch(stats)

    if best["weights"] is not None:
        model.load_state_dict(best["weights"])
    elif ema is not None:
        model.load_state_dict(ema.module.state_dict())
    return history
