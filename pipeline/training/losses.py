"""Reconstruction losses by name, their weighted sum, and deep supervision over output scales."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from pipeline.errors import ParamsError
from pipeline.models.mscale import image_pyramid

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
CHARBONNIER_EPSILON = 1e-3  # smooth L1 near zero, as in the demoiré literature (MBCNN, ESDNet)
PSNR_MSE_FLOOR = 1e-8  # an MSE this small is 80 dB: a perfect patch neither divides by zero nor dominates


def charbonnier(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of sqrt(diff² + ε²): L1 that stays differentiable at zero."""
    return torch.sqrt((pred - target) ** 2 + CHARBONNIER_EPSILON**2).mean()


def fft_amplitude(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of 2-D Fourier amplitudes: moiré is narrow-band, so it stands out here."""
    return (torch.fft.rfft2(pred.float(), norm="ortho").abs() - torch.fft.rfft2(target.float(), norm="ortho").abs()).abs().mean()


def negative_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of each image's −PSNR in dB (10·log10 of its MSE), as HINet trains.

    Mean MSE lets the few images with the strongest moiré set the gradient; averaged in dB, as the
    evaluation averages PSNR, every image counts alike and harming a nearly clean one costs as much
    as failing to clean a stripy one.
    """
    mse = (pred.float() - target.float()).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(mse + PSNR_MSE_FLOOR).mean()


LOSSES: dict[str, Loss] = {"mse": F.mse_loss, "l1": F.l1_loss, "charbonnier": charbonnier, "fft": fft_amplitude,
                           "psnr": negative_psnr}


def get_loss(name: str) -> Loss:
    """The loss function called `name`."""
    if name not in LOSSES:
        raise ParamsError(f"train.loss = {name!r}: unknown loss; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]


def weighted_loss(weights: dict[str, float]) -> Loss:
    """Σ weight · loss over the named losses (names validated by get_loss)."""
    terms = [(get_loss(name), weight) for name, weight in weights.items() if weight > 0]

    def total(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(weight * loss(pred, target) for loss, weight in terms)

    return total


def multiscale_loss(outputs: list[torch.Tensor], target: torch.Tensor, loss: Loss, coarse_weight: float) -> torch.Tensor:
    """Loss of the full-resolution output plus `coarse_weight` × that of each coarser output.

    Coarser outputs are compared with the target box-filtered to their size (deep supervision),
    the same pyramid the multi-scale model adds its corrections to, so odd sizes line up.
    """
    targets = image_pyramid(target) if len(outputs) > 1 else [target]
    total = loss(outputs[0], target)
    for coarse, coarse_target in zip(outputs[1:], targets[1:]):
        total = total + coarse_weight * loss(coarse, coarse_target)
    return total
