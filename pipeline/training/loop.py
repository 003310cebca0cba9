"""The training loop: Adam with cosine decay, validation PSNR and a checkpoint each epoch."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from pipeline.config import TrainParams
from pipeline.data.augment import paired_augmentation
from pipeline.data.dataset import Pair, PairDataset
from pipeline.errors import DemoireError
from pipeline.evaluation.metrics import batch_psnr
from pipeline.training.checkpoint import save_checkpoint
from pipeline.training.losses import get_loss

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


def make_train_loader(pairs: list[Pair], cfg: TrainParams, seed: int, device: torch.device) -> DataLoader:
    """Shuffled, augmented patches; the order depends only on the seed."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        PairDataset(pairs, paired_augmentation(cfg.patch_size, seed)),
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=len(pairs) >= cfg.batch_size,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
        generator=generator,
    )


@torch.no_grad()
def validate(model: nn.Module, pairs: list[Pair], loss_fn, device: torch.device) -> tuple[float, float]:
    """Mean loss and mean per-image PSNR over whole validation images."""
    model.eval()
    losses, psnrs = [], []
    for moire, clean in PairDataset(pairs):
        x, y = moire[None].to(device), clean[None].to(device)
        pred = model(x).clamp(0, 1)
        losses.append(float(loss_fn(pred, y)))
        psnrs.append(float(batch_psnr(pred, y).mean()))
    return sum(losses) / len(losses), sum(psnrs) / len(psnrs)


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
    """Train for cfg.epochs; checkpoint after each epoch; return the per-epoch history."""
    torch.manual_seed(seed)
    model.to(device)
    loss_fn = get_loss(cfg.loss)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loader = make_train_loader(train_pairs, cfg, seed + TRAIN_STREAM, device)
    # Cosine decay to zero: the last epochs average out the noise of small-batch updates.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs * len(loader))
    history: list[EpochStats] = []
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        for step, (moire, clean) in enumerate(loader):
            moire, clean = moire.to(device, non_blocking=True), clean.to(device, non_blocking=True)
            loss = loss_fn(model(moire), clean)
            if not math.isfinite(loss.item()):
                raise DemoireError(f"training diverged: loss is {loss.item()} at epoch {epoch}, step {step}; lower train.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # Strong-moiré patches give rare huge gradients; unclipped, one can wreck the weights.
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
            optimizer.step()
            schedule.step()
            total += loss.item() * moire.shape[0]
            count += moire.shape[0]
        val_loss, val_psnr = validate(model, val_pairs, loss_fn, device)
        stats = EpochStats(epoch, total / count, val_loss, val_psnr, time.perf_counter() - start)
        save_checkpoint(checkpoint_path, model, optimizer, epoch)
        log.info("epoch %d/%d: train_loss %.5f val_loss %.5f val_psnr %.2f dB (%.1fs)",
                 epoch, cfg.epochs, stats.train_loss, val_loss, val_psnr, stats.seconds)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    return history
