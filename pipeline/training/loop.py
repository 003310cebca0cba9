"""The training loop: AdamW with warm-up and cosine decay, optional EMA and early stopping,
validation PSNR and a resumable checkpoint each epoch."""

from __future__ import annotations

import contextlib
import copy
import datetime
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
from torch.nn.parallel import DistributedDataParallel

from pipeline.config import TrainParams
from pipeline.data.dataset import Pair, PairDataset
from pipeline.errors import DemoireError
from pipeline.evaluation.metrics import batch_psnr
from pipeline.inference import in_layout, input_format
from pipeline.progress import track_progress
from pipeline.provenance import code_digest
from pipeline.training.batches import TrainingBatches, pairs_content_digest
from pipeline.training.checkpoint import load_checkpoint, save_checkpoint
from pipeline.training.distributed import World, sum_across
from pipeline.training.losses import Loss, multiscale_loss, weighted_loss
from pipeline.training.optim import make_optimizer, warmup_cosine

log = logging.getLogger(__name__)
GRAD_CLIP_NORM = 0.5


@dataclass(frozen=True)
class EpochStats:
    """One row of the training history (declared as a DVC plot)."""

    epoch: int
    train_loss: float
    val_loss: float
    val_psnr: float
    seconds: float
    lr: float = math.nan  # at the epoch's end; NaN in checkpoints written before it was recorded


@dataclass(frozen=True)
class StepStats:
    """One optimiser step, as `train_model` reports it to an `on_step` hook."""

    epoch: int
    step: int  # 1-based within the epoch
    steps_per_epoch: int
    loss: float  # this step's loss, averaged over the ranks

    @property
    def global_step(self) -> int:
        """Steps since the run began (1-based), a step axis that continues across epochs and resumes."""
        return (self.epoch - 1) * self.steps_per_epoch + self.step


# Settings that change how a run is executed but not what it computes: they may differ on resume.
EXECUTION_ONLY = {"num_workers", "resume", "log_every_steps"}


# The code whose numbers a checkpoint holds (dvc.yaml's train stage lists the same): after an edit to it a checkpoint
# does not resume, or `dvc repro` would "resume" the last run after its final epoch and ship weights the edited code
# never made.
TRAINING_CODE = ("pipeline/__init__.py", "pipeline/training", "pipeline/models", "pipeline/inference.py",
                 "pipeline/evaluation/metrics.py", "pipeline/data/dataset.py", "pipeline/data/augment.py",
                 "pipeline/data/on_the_fly.py", "pipeline/moire", "pipeline/sources")


def training_code_digest() -> str:
    """Digest of TRAINING_CODE and of the torch, numpy and albumentations versions the weights depend on."""
    import albumentations
    import numpy

    return code_digest(TRAINING_CODE, f"{torch.__version__} {numpy.__version__} {albumentations.__version__}")


def training_fingerprint(cfg: TrainParams, seed: int, data_digests: list[str], world_size: int) -> str:
    """Digest of the params, data (train and val), process count and training code: a checkpoint resumes only
    the run it came from."""
    settings = cfg.model_dump(mode="json", exclude=EXECUTION_ONLY)
    return hashlib.sha256(json.dumps([settings, seed, data_digests, world_size, training_code_digest()],
                                     sort_keys=True).encode()).hexdigest()


def effective_amp(device: torch.device, amp: str) -> str:
    """'bf16' on CUDA unless amp is off; 'off' on CPU, where bf16 is slow."""
    return "bf16" if device.type == "cuda" and amp != "off" else "off"


def effective_compile(device: torch.device, compile_model: bool) -> bool:
    """torch.compile on CUDA when asked; never on CPU, where Inductor failed on the multi-scale model's
    scatter (torch 2.13: a 570-line traceback after minutes of code generation)."""
    return compile_model and device.type == "cuda"


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16 autocast where `effective_amp` says so, else full precision."""
    if effective_amp(device, amp) == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def rng_state(device: torch.device) -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """torch's global generators. The data order needs none (it derives from seed and epoch); kept so
    that randomness inside a model (dropout, noise) also resumes where it was."""
    state: dict = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    """Put back what `rng_state` saved."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


class SupervisedOutputs(nn.Module):
    """The outputs the loss compares: [full, 1/2, 1/4] with deep supervision, else [full].

    The multi-scale forward must be the module's `forward`, or DDP would not synchronise its
    gradients and torch.compile would not compile it.
    """

    def __init__(self, model: nn.Module, multiscale: bool):
        super().__init__()
        self.model, self.multiscale = model, multiscale

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_multiscale(x) if self.multiscale else [self.model(x)]


def wrap_for_training(model: nn.Module, cfg: TrainParams, world: World, device: torch.device) -> nn.Module:
    """The module the loop calls: supervised outputs, under DDP across processes, compiled if asked."""
    has_scales = hasattr(model, "forward_multiscale")
    net: nn.Module = SupervisedOutputs(model, has_scales and cfg.multiscale_weight > 0)
    if world.size > 1:
        # Without deep supervision the coarse heads get no gradient, and DDP must be told.
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=has_scales and cfg.multiscale_weight == 0)
    if cfg.compile and not effective_compile(device, cfg.compile) and world.is_main:
        log.info("train.compile: not on %s (torch.compile is used on CUDA only)", device.type)
    return torch.compile(net) if effective_compile(device, cfg.compile) else net


@torch.no_grad()
def validate(model: nn.Module, pairs: list[Pair], loss_fn: Loss, device: torch.device, amp: str = "off",
             world: World = World()) -> tuple[float, float]:
    """Mean loss and mean per-image PSNR over whole validation images, shared out among the ranks."""
    model.eval()
    memory_format = input_format(model, device)
    loss_sum, psnr_sum, count = 0.0, 0.0, 0
    for moire, clean in PairDataset(pairs[world.rank::world.size]):
        x, y = in_layout(moire[None].to(device), memory_format), clean[None].to(device)
        with autocast(device, amp):
            pred = model(x)
        pred = pred.float().clamp(0, 1)
        loss_sum += float(loss_fn(pred, y))
        psnr_sum += float(batch_psnr(pred, y).mean())
        count += 1
    loss_sum, psnr_sum, count = sum_across([loss_sum, psnr_sum, count], device)
    return loss_sum / count, psnr_sum / count


def epoch_title(epoch: int, epochs: int, history: list[EpochStats]) -> str:
    """`train epoch 3/30`, with the run's ETA once an epoch has been timed (the bar gives the epoch's own)."""
    timed = [row.seconds for row in history if math.isfinite(row.seconds)]
    if not timed:
        return f"train epoch {epoch}/{epochs}"
    left = datetime.timedelta(seconds=round(sum(timed) / len(timed) * (epochs - epoch + 1)))
    return f"train epoch {epoch}/{epochs} (run ETA {left})"


def train_model(
    model: nn.Module,
    batches: TrainingBatches,
    val_pairs: list[Pair],
    cfg: TrainParams,
    seed: int,
    device: torch.device,
    checkpoint_path: Path,
    on_epoch: Callable[[list[EpochStats]], None] | None = None,
    world: World = World(),
    on_start: Callable[[list[EpochStats]], None] | None = None,
    on_step: Callable[[StepStats], None] | None = None,
) -> list[EpochStats]:
    """Train `model` in place for cfg.epochs and return the history of every epoch.

    A checkpoint after each epoch holds everything the next epoch depends on, so a killed run
    restarted with the same params and data (cfg.resume) continues where it stopped and ends with
    the same weights as an uninterrupted one. With EMA the final weights are the average; with
    early stopping they are those of the best validation epoch. Across DDP ranks, rank 0 alone
    writes the checkpoint, shows progress and calls the hooks: `on_start` once with the history a
    resumed checkpoint brought (empty for a fresh run), `on_step` after every optimiser step, and
    `on_epoch` with the history so far after each epoch's checkpoint.
    """
    model.to(device)
    memory_format = input_format(model, device)  # channels_last where the convolutions run faster in it
    model.to(memory_format=memory_format)
    loss_fn = weighted_loss(cfg.loss)
    net = wrap_for_training(model, cfg, world, device)
    if cfg.amp == "bf16" and effective_amp(device, cfg.amp) == "off" and world.is_main:
        log.info("train.amp: bf16 not on %s (full precision there, where bf16 is slow)", device.type)
    steps = batches.steps_per_epoch
    optimizer = make_optimizer(model, cfg)
    schedule = warmup_cosine(optimizer, round(cfg.warmup_epochs * steps), cfg.epochs * steps)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay)) if cfg.ema_decay > 0 else None
    # The val pairs count too: the history and early stopping a checkpoint holds were scored on them.
    fingerprint = training_fingerprint(cfg, seed, [batches.digest(), pairs_content_digest(val_pairs)], world.size)

    history: list[EpochStats] = []
    best = {"val_psnr": -math.inf, "epoch": 0, "weights": None}
    state = load_checkpoint(checkpoint_path, fingerprint) if cfg.resume else None
    if cfg.resume and state is None and Path(checkpoint_path).is_file() and world.is_main:
        log.info("%s was made for other params, data or training code: training afresh", checkpoint_path)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        history = [EpochStats(**row) for row in state["history"]]
        best = state["best"]
        if "rng" in state:  # checkpoints written before it was saved resume without it
            restore_rng(state["rng"], device)
        if world.is_main:
            log.info("resuming from %s after epoch %d", checkpoint_path, len(history))
    if world.is_main and on_start is not None:
        on_start(history)

    for epoch in range(len(history) + 1, cfg.epochs + 1):
        if cfg.early_stop_patience and epoch - best["epoch"] > cfg.early_stop_patience:
            if world.is_main:
                log.info("early stop: no better val PSNR than %.2f dB (epoch %d) for %d epochs",
                         best["val_psnr"], best["epoch"], cfg.early_stop_patience)
            break
        start = time.perf_counter()
        net.train()
        total, count = 0.0, 0
        # rank 0 alone shows progress: a bar on a terminal, log lines elsewhere (pipeline.progress)
        progress = track_progress(batches.epoch(epoch), epoch_title(epoch, cfg.epochs, history), steps, "steps",
                                  None if world.is_main else "off")
        for step, (moire, clean) in enumerate(progress):
            moire, clean = moire.to(device, non_blocking=True), clean.to(device, non_blocking=True)
            moire = in_layout(moire, memory_format)
            with autocast(device, cfg.amp):
                outputs = net(moire)
            loss = multiscale_loss([out.float() for out in outputs], clean, loss_fn, cfg.multiscale_weight)
            # Every rank must see a divergence on any rank, or the others would wait at the next all-reduce.
            (step_loss,) = sum_across([loss.item()], device)
            if not math.isfinite(step_loss):
                kept = (f"{checkpoint_path} keeps the last good epoch" if history else
                        "no epoch had finished")  # a checkpoint there would be another run's
                raise DemoireError(f"training diverged: loss is {step_loss} at epoch {epoch}, step {step}; {kept}; "
                                   "lower train.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # Strong-moiré patches give rare huge gradients; unclipped, one can wreck the weights.
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
            optimizer.step()
            schedule.step()
            if ema is not None:
                ema.update_parameters(model)
            total += step_loss * moire.shape[0]
            count += moire.shape[0] * world.size
            if world.is_main and on_step is not None:
                on_step(StepStats(epoch, step + 1, steps, step_loss / world.size))
        evaluated = ema.module if ema is not None else model
        val_loss, val_psnr = validate(evaluated, val_pairs, loss_fn, device, cfg.amp, world)
        stats = EpochStats(epoch, total / count, val_loss, val_psnr, time.perf_counter() - start,
                           schedule.get_last_lr()[0])
        history.append(stats)
        if val_psnr > best["val_psnr"]:
            weights = copy.deepcopy(evaluated.state_dict()) if cfg.early_stop_patience else None
            best = {"val_psnr": val_psnr, "epoch": epoch, "weights": weights}
        if world.is_main:
            save_checkpoint(checkpoint_path, {
                "fingerprint": fingerprint, "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "history": [asdict(row) for row in history], "best": best, "rng": rng_state(device),
            })
            log.info("epoch %d/%d: train_loss %.5f val_loss %.5f val_psnr %.2f dB (%.1fs)",
                     epoch, cfg.epochs, stats.train_loss, val_loss, val_psnr, stats.seconds)
            if on_epoch is not None:
                on_epoch(history)

    if best["weights"] is not None:
        model.load_state_dict(best["weights"])
    elif ema is not None:
        model.load_state_dict(ema.module.state_dict())
    return history
