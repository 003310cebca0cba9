"""Per-epoch checkpoints written atomically, so a killed run never leaves a truncated file."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.io import atomic_path


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> None:
    """Model and optimiser state after `epoch` (1-based)."""
    with atomic_path(path) as tmp:
        torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp)
