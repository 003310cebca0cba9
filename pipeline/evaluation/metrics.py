"""Image quality metrics via torchmetrics.

Convention: RGB images as float tensors in [0, 1] (data_range = 1.0), N×3×H×W; each metric is
computed per image (SSIM: 11×11 Gaussian window, σ = 1.5, averaged over channels and pixels),
then averaged over images by the caller.

SSIM is computed over strips of rows: torchmetrics' SSIM holds about 25 float maps of the image at
once (1.4 GB for a 1080p frame, 5.5 GB for 4K). Each strip is scored with 5 rows of context either
side (half the window), whose own map values are dropped, so every kept value is the whole image's
(reflected at the image's top and bottom as torchmetrics reflects the whole image).

On CPU the images go to torchmetrics in channels_last: its SSIM window is a grouped convolution, which oneDNN runs
3× faster in that layout, to the same bits (docs/benchmarks.md, "Evaluation at dataset sizes").
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from pipeline.inference import in_layout

DATA_RANGE = 1.0
# An image equal to its target has infinite PSNR; capped, so means and gains stay numbers (a
# flat synthetic pair restored exactly would otherwise turn a whole split's mean into inf − inf).
MAX_PSNR_DB = 100.0


def batch_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image in the batch, at most MAX_PSNR_DB."""
    psnr = peak_signal_noise_ratio(pred, target, data_range=DATA_RANGE, reduction="none", dim=(1, 2, 3))
    return psnr.clamp(max=MAX_PSNR_DB)


SSIM_HALO = 5  # rows of context a strip needs: half of the 11-row window
SSIM_STRIP_VALUES = 2**20  # pixels × channels × images per strip: about 100 MB of SSIM maps at a time


def _for_grouped_convolution(image: torch.Tensor) -> torch.Tensor:
    """`image` in channels_last on CPU, where oneDNN's grouped convolution is 3× faster in it; as it is elsewhere."""
    return in_layout(image, torch.channels_last) if image.device.type == "cpu" else image


def batch_ssim(pred: torch.Tensor, target: torch.Tensor, strip_values: int = SSIM_STRIP_VALUES) -> torch.Tensor:
    """SSIM of each image in the batch, over strips of rows of about `strip_values` values (one strip when it fits)."""
    pred, target = _for_grouped_convolution(pred), _for_grouped_convolution(target)
    height = pred.shape[-2]
    rows = max(1, strip_values // (pred[..., 0, :].numel()))
    if rows >= height:
        return structural_similarity_index_measure(pred, target, data_range=DATA_RANGE, reduction="none")
    total = torch.zeros(pred.shape[0], dtype=torch.float64)
    for start in range(0, height, rows):
        end = min(start + rows, height)
        top, bottom = max(start - SSIM_HALO, 0), min(end + SSIM_HALO, height)
        _, ssim_map = structural_similarity_index_measure(pred[..., top:bottom, :], target[..., top:bottom, :],
                                                          data_range=DATA_RANGE, reduction="none",
                                                          return_full_image=True)
        total += ssim_map[..., start - top: end - top, :].double().flatten(1).sum(dim=1)
    return (total / pred[0].numel()).to(pred.dtype)


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
