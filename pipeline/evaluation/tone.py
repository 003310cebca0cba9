"""Tone-aligned scoring: how much of an image's error is structure (moiré, blur) once global tone is fitted away.

Photos of screens differ from their ground truth in exposure, contrast and colour balance as much
as in moiré, and real datasets disagree on the direction (FHDMi photos are darker than their
truth, others brighter). A per-image, per-channel affine fit (gain and offset by least squares) of
an image to its target removes that global tone difference, so the PSNR / SSIM left measure what a
demoiré model is for. The fit is applied to the input and to the model's output alike, each with
its own fit, and the result is clamped to [0, 1] before scoring.
"""

from __future__ import annotations

import torch

# A channel this flat (variance of values in [0, 1]) carries no gain to fit: only its offset is fitted.
FLAT_VARIANCE = 1e-10


def align_tone(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`image` (3×H×W in [0, 1]) after the per-channel gain + offset that best fits it to `target`."""
    # one channel at a time in float64: all three at once would hold ~8 float64 copies (1.6 GB at 4K)
    return torch.stack([_align_channel(x, y) for x, y in zip(image, target)]).to(image.dtype)


def _align_channel(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One H×W channel after the gain + offset (least squares, in float64) that best fits it to `target`."""
    x, y = image.double(), target.double()
    x_mean, y_mean = x.mean(), y.mean()
    variance = ((x - x_mean) ** 2).mean()
    covariance = ((x - x_mean) * (y - y_mean)).mean()
    gain = covariance / variance.clamp(min=FLAT_VARIANCE) if variance > FLAT_VARIANCE else torch.zeros_like(variance)
    return (gain * (x - x_mean) + y_mean).clamp(0.0, 1.0).to(image.dtype)
