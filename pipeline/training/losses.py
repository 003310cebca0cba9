"""Reconstruction losses by name."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from pipeline.errors import ParamsError

LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": F.mse_loss,
    "l1": F.l1_loss,
}


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss function called `name`."""
    if name not in LOSSES:
        raise ParamsError(f"train.loss = {name!r}: unknown loss; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
