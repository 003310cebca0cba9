"""Optimiser and learning-rate schedule: AdamW, linear warm-up, then cosine decay to zero."""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.config import TrainParams


def make_optimizer(model: nn.Module, cfg: TrainParams) -> torch.optim.AdamW:
    """AdamW over all parameters with the configured learning rate and weight decay."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step factor: linear from 1/warmup to 1 over `warmup_steps`, then cosine to 0 at `total_steps`.

    Warm-up keeps Adam's first, poorly estimated steps small; the cosine tail averages out the
    noise of small-batch updates.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
