"""Apply a restoration model to whole images."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.data.dataset import to_image, to_tensor


@torch.no_grad()
def restore_tensor(model: nn.Module, moire: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Restore one 3×H×W image in [0, 1]; returns it clamped to [0, 1] on the CPU."""
    model.eval()
    return model(moire[None].to(device)).clamp(0, 1)[0].cpu()


def restore_image(model: nn.Module, image: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """Restore one HxWx3 uint8 RGB image of any size."""
    return to_image(restore_tensor(model, to_tensor(image), torch.device(device)))
