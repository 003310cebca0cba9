"""The camera's image signal processor: demosaic, white balance, tone curve, sharpening."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.moire.optics import gaussian_kernels, separable_filter
from pipeline.moire.sensor import RGGB

SHARPEN_SIGMA = 1.0  # radius of the unsharp mask, pixels: what phone ISPs use for detail


def cfa_masks(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(1, 3, H, W) 0/1 masks of which pixels of an RGGB mosaic recorded each colour."""
    masks = torch.zeros(1, 3, height, width, device=device)
    for dy in (0, 1):
        for dx in (0, 1):
            masks[0, RGGB[dy][dx], dy::2, dx::2] = 1.0
    return masks


def demosaic(raw: torch.Tensor) -> torch.Tensor:
    """Bilinear demosaic of an RGGB mosaic (B, 1, H, W) into (B, 3, H, W).

    Each missing value is the mean of its nearest recorded neighbours: red and blue from a
    separable [½ 1 ½]² stencil, green from its four direct neighbours.
    """
    height, width = raw.shape[2:]
    sparse = F.pad(raw * cfa_masks(height, width, raw.device).to(raw.dtype), (1, 1, 1, 1), mode="reflect")

    def shifted(dy: int, dx: int, channels: slice) -> torch.Tensor:
        return sparse[:, channels, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]

    red_blue = slice(0, 3, 2)
    above = 0.5 * shifted(-1, -1, red_blue) + shifted(-1, 0, red_blue) + 0.5 * shifted(-1, 1, red_blue)
    middle = 0.5 * shifted(0, -1, red_blue) + shifted(0, 0, red_blue) + 0.5 * shifted(0, 1, red_blue)
    below = 0.5 * shifted(1, -1, red_blue) + shifted(1, 0, red_blue) + 0.5 * shifted(1, 1, red_blue)
    red_blue_full = 0.5 * above + middle + 0.5 * below
    g = slice(1, 2)
    green = shifted(0, 0, g) + 0.25 * (shifted(-1, 0, g) + shifted(1, 0, g) + shifted(0, -1, g) + shifted(0, 1, g))
    return torch.cat([red_blue_full[:, :1], green, red_blue_full[:, 1:]], dim=1)


def subtract_black_point(linear: torch.Tensor, black_point: torch.Tensor) -> torch.Tensor:
    """The ISP's black-level correction: (x − b) / (1 − b), b per capture, in linear light.

    It removes an estimate of the light a black screen still sends (glare); estimates above the
    real glare crush the shadows, below it leave them lifted, as real screen photos do both.
    """
    b = black_point.reshape(-1, 1, 1, 1)
    return (linear - b) / (1.0 - b)


def white_balance(rgb: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Multiply each channel by the camera's white-balance gain (B, 3)."""
    return rgb * gains.reshape(-1, 3, 1, 1)


def tone_curve(linear: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Encode linear light with a power-law tone curve of each capture's gamma, to [0, 1]."""
    return linear.clamp(0.0, 1.0) ** (1.0 / gamma.reshape(-1, 1, 1, 1))


def denoise_chroma(rgb: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur colour differences (not luma) by a Gaussian of `sigma` pixels per capture.

    Phone ISPs smooth chroma far more than luma to hide colour noise; it also smooths the fine
    false colour that demosaicing makes of an aliased screen grid, leaving its wide colour bands.
    """
    if float(sigma.max()) <= 0:
        return rgb
    weights = torch.tensor((0.299, 0.587, 0.114), dtype=rgb.dtype, device=rgb.device).reshape(1, 3, 1, 1)
    luma = (rgb * weights).sum(dim=1, keepdim=True)
    radius = max(1, int(torch.ceil(3 * sigma.max())))
    chroma = separable_filter(rgb - luma, gaussian_kernels(sigma.to(rgb.dtype), radius))
    return luma + chroma


def shrink_to(image: torch.Tensor, size: int) -> torch.Tensor:
    """Downscale the camera's frame to the dataset's `size`, with an anti-aliasing bicubic filter.

    Real moiré datasets are phone photos of 12–48 MP shrunk to 4K, 1080p or 256²: the shrink keeps
    the wide beat bands and averages away most of the fine screen-grid texture.
    """
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    return F.interpolate(image, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0.0, 1.0)


def sharpen(image: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Unsharp mask: add `amount` × (image − blurred image), clipped to [0, 1]."""
    if float(amount.max()) <= 0:
        return image
    sigma = torch.full_like(amount, SHARPEN_SIGMA, dtype=image.dtype)
    blurred = separable_filter(image, gaussian_kernels(sigma, radius=3))
    return (image + amount.reshape(-1, 1, 1, 1) * (image - blurred)).clamp(0.0, 1.0)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] float → uint8 with rounding."""
    return (image * 255.0).round().clamp(0, 255).to(torch.uint8)
