"""The sensor: integration over each pixel's area, exposure, a Bayer colour filter array, and noise."""

from __future__ import annotations

import torch

# Which RGB channel each position of the 2×2 RGGB tile records: rows then columns.
RGGB = ((0, 1), (1, 2))


def aperture_weights(supersample: int, aperture: torch.Tensor) -> torch.Tensor:
    """(B, s) weights of each sub-sample cell: its overlap with the pixel's light-sensitive centre.

    `aperture` is the sensitive fraction of the pixel pitch along each axis (1 = the whole pixel).
    """
    edges = torch.arange(supersample + 1, dtype=torch.float32, device=aperture.device) / supersample
    low = ((1.0 - aperture) / 2.0).reshape(-1, 1).to(torch.float32)
    high = ((1.0 + aperture) / 2.0).reshape(-1, 1).to(torch.float32)
    overlap = (torch.minimum(edges[1:], high) - torch.maximum(edges[:-1], low)).clamp(min=0.0)
    return overlap / overlap.sum(dim=1, keepdim=True)


def integrate_pixel_area(samples: torch.Tensor, supersample: int, aperture: torch.Tensor) -> torch.Tensor:
    """Integrate s×s sub-samples (B, C, H·s, W·s) over each pixel's sensitive aperture → (B, C, H, W)."""
    if supersample == 1:
        return samples
    batch, channels = samples.shape[:2]
    h, w = samples.shape[2] // supersample, samples.shape[3] // supersample
    weights = aperture_weights(supersample, aperture)
    blocks = samples.reshape(batch, channels, h, supersample, w, supersample)
    return torch.einsum("bciajd,ba,bd->bcij", blocks, weights, weights)


def expose(irradiance: torch.Tensor, exposure_ev: torch.Tensor) -> torch.Tensor:
    """Scale the light by the exposure (in stops relative to a correct exposure of the white)."""
    return irradiance * torch.exp2(exposure_ev).reshape(-1, 1, 1, 1)


def bayer_mosaic(rgb: torch.Tensor) -> torch.Tensor:
    """Keep one colour per pixel following the RGGB pattern: (B, 3, H, W) → (B, 1, H, W)."""
    raw = torch.empty_like(rgb[:, :1])
    for dy in (0, 1):
        for dx in (0, 1):
            channel = RGGB[dy][dx]
            raw[:, 0, dy::2, dx::2] = rgb[:, channel, dy::2, dx::2]
    return raw


def add_sensor_noise(
    raw: torch.Tensor, shot_noise: torch.Tensor, read_noise: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Heteroscedastic Gaussian noise: variance shot·signal + read², clipped to the sensor's [0, 1]."""
    shot = shot_noise.reshape(-1, 1, 1, 1)
    read = read_noise.reshape(-1, 1, 1, 1)
    std = torch.sqrt(shot * raw.clamp(min=0.0) + read**2)
    noise = torch.randn(raw.shape, generator=generator, device=raw.device, dtype=raw.dtype)
    return (raw + noise * std).clamp(0.0, 1.0)
