"""The sensor: integration over each pixel's area, a Bayer colour filter array, and noise."""

from __future__ import annotations

import numpy as np

# Which RGB channel each position of the 2×2 RGGB tile records: rows then columns.
RGGB = ((0, 1), (1, 2))


def aperture_weights(supersample: int, aperture: float) -> np.ndarray:
    """1-D weights of each sub-sample cell: its overlap with the pixel's central light-sensitive part.

    `aperture` is the sensitive fraction of the pixel pitch along each axis (1 = the whole pixel).
    """
    edges = np.arange(supersample + 1) / supersample
    low, high = (1.0 - aperture) / 2.0, (1.0 + aperture) / 2.0
    overlap = np.clip(np.minimum(edges[1:], high) - np.maximum(edges[:-1], low), 0.0, None)
    return (overlap / overlap.sum()).astype(np.float32)


def integrate_pixel_area(samples: np.ndarray, supersample: int, aperture: float = 1.0) -> np.ndarray:
    """Integrate supersample×supersample sub-samples over each pixel's sensitive aperture."""
    h, w = samples.shape[0] // supersample, samples.shape[1] // supersample
    weights = aperture_weights(supersample, aperture)
    blocks = samples.reshape(h, supersample, w, supersample, -1)
    return np.einsum("iajbc,a,b->ijc", blocks, weights, weights, optimize=True)


def bayer_mosaic(rgb: np.ndarray) -> np.ndarray:
    """Keep one colour per pixel following the RGGB pattern (HxWx3 → HxW)."""
    raw = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            raw[dy::2, dx::2] = rgb[dy::2, dx::2, RGGB[dy][dx]]
    return raw


def add_sensor_noise(
    raw: np.ndarray, shot_noise: float, read_noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Heteroscedastic Gaussian noise: variance shot_noise·signal + read_noise², clipped to [0, 1]."""
    std = np.sqrt(shot_noise * np.clip(raw, 0, None) + read_noise**2)
    return np.clip(raw + rng.standard_normal(raw.shape).astype(np.float32) * std, 0.0, 1.0)
