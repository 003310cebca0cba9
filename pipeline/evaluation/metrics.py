"""Image quality metrics via torchmetrics.

Convention: RGB images as float tensors in [0, 1] (data_range = 1.0), N×3×H×W; each metric is
computed per image (SSIM: 11×11 Gaussian window, σ = 1.5, averaged over channels and pixels),
then averaged over images by the caller.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

DATA_RANGE = 1.0
# An image equal to its target has infinite PSNR; capped, so means and gains stay numbers (a
# flat synthetic pair restored exactly would otherwise turn a whole split's mean into inf − inf).
MAX_PSNR_DB = 100.0


def batch_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image in the batch, at most MAX_PSNR_DB."""
    psnr = peak_signal_noise_ratio(pred, target, data_range=DATA_RANGE, reduction="none", dim=(1, 2, 3))
    return psnr.clamp(max=MAX_PSNR_DB)


def batch_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of each image in the batch."""
    return structural_similarity_index_measure(pred, target, data_range=DATA_RANGE, reduction="none")


def batch_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each image in the batch."""
    return ((pred - target) ** 2).mean(dim=(1, 2, 3))


def image_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """PSNR, SSIM and MSE of one 3×H×W image against its target."""
    pred, target = pred[None].float(), target[None].float()
    return {
        "psnr": float(batch_psnr(pred, target)[0]),
        "ssim": float(batch_ssim(pred, target)[0]),
        "mse": float(batch_mse(pred, target)[0]),
    }
