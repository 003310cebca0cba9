"""The screen: source pixels emitted through a subpixel layout with a black matrix."""

from __future__ import annotations

import numpy as np

# Horizontal position (0, 1, 2 of three stripes) of the R, G and B subpixels in each layout.
SUBPIXEL_COLUMNS = {"rgb_stripe": (0, 1, 2), "bgr_stripe": (2, 1, 0)}


def decode_display_gamma(image_u8: np.ndarray, gamma: float) -> np.ndarray:
    """Pixel values → linear light emitted by the display (float32 in [0, 1])."""
    return (image_u8.astype(np.float32) / 255.0) ** gamma


def _lit_length(x: np.ndarray, start: float, length: float) -> np.ndarray:
    """Lit length in [0, x] of a pattern with period 1 lit on [start, start + length)."""
    whole = np.floor(x)
    return whole * length + np.clip(x - whole - start, 0.0, length)


def _box_coverage(x: np.ndarray, width: float, start: float, length: float) -> np.ndarray:
    """Fraction of a box of `width` centred at x that falls on the lit part of the pattern."""
    return (_lit_length(x + width / 2, start, length) - _lit_length(x - width / 2, start, length)) / width


def subpixel_layout(
    u: np.ndarray, v: np.ndarray, footprint: float, layout: str, fill_factor: float
) -> np.ndarray:
    """Relative emission (mean 1 per channel) of each colour over sample footprints at (u, v).

    u, v are display coordinates in pixels (pixel i spans [i, i+1)); `footprint` is the sample's
    width in display pixels, so the layout is integrated over the area a sample sees rather than
    point-sampled. `fill_factor` is the lit fraction of each subpixel along both axes; the rest is
    black matrix.
    """
    stripe = fill_factor / 3.0
    rows = _box_coverage(v, footprint, (1.0 - fill_factor) / 2.0, fill_factor) / fill_factor
    out = np.empty(u.shape + (3,), dtype=np.float32)
    for channel, column in enumerate(SUBPIXEL_COLUMNS[layout]):
        start = (column + (1.0 - fill_factor) / 2.0) / 3.0
        out[..., channel] = rows * _box_coverage(u, footprint, start, stripe) / stripe
    return out


def emitted_light(
    linear: np.ndarray, u: np.ndarray, v: np.ndarray, footprint: float, layout: str, fill_factor: float
) -> np.ndarray:
    """Light the screen emits toward samples at display coords (u, v); black outside the panel."""
    height, width = linear.shape[:2]
    iu, iv = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    inside = (iu >= 0) & (iu < width) & (iv >= 0) & (iv < height)
    pixels = linear[np.clip(iv, 0, height - 1), np.clip(iu, 0, width - 1)]
    light = pixels * subpixel_layout(u, v, footprint, layout, fill_factor)
    return np.where(inside[..., None], light, 0.0).astype(np.float32)
