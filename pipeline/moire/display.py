"""The screen: panel colour response, and source pixels emitted through a subpixel layout.

Images are (B, C, H, W) float tensors; per-capture parameters are (B,) tensors, so a whole batch
of captures with different parameters runs at once on CPU or CUDA.
"""

from __future__ import annotations

import torch

SUBPIXEL_LAYOUTS = ("rgb_stripe", "bgr_stripe", "pentile")
# Horizontal position (0, 1, 2 of three stripes) of the R, G and B subpixels in the stripe layouts.
STRIPE_COLUMNS = {"rgb_stripe": (0, 1, 2), "bgr_stripe": (2, 1, 0)}
# Rec. 709 luma weights: what "saturation" is measured against when the panel's gamut differs.
LUMA = (0.2126, 0.7152, 0.0722)


def _per_item(values: torch.Tensor, ndim: int = 4) -> torch.Tensor:
    """(B,) or (B, C) parameters reshaped to broadcast over (B, C, H, W)."""
    return values.reshape(values.shape[0], -1, *([1] * (ndim - 2)))


def decode_display_gamma(encoded: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """8-bit pixel values (B, 3, N, N) → linear light in [0, 1], per capture's gamma.

    A 256-entry table per capture: a lookup is several times cheaper than a power on CPU.
    """
    levels = torch.arange(256, dtype=torch.float32, device=encoded.device) / 255.0
    tables = levels[None] ** gamma.reshape(-1, 1).to(torch.float32)  # (B, 256)
    batch = encoded.shape[0]
    linear = tables.gather(1, encoded.reshape(batch, -1).long())
    return linear.reshape(encoded.shape)


def panel_colour(
    linear: torch.Tensor, gamut: torch.Tensor, white_point: torch.Tensor, brightness: torch.Tensor,
) -> torch.Tensor:
    """The panel's rendering of linear sRGB: its gamut (saturation), white point and brightness.

    `gamut` scales saturation around luma (1 = the source's primaries), `white_point` is a (B, 3)
    gain per channel and `brightness` scales the whole panel.
    """
    luma = torch.tensor(LUMA, dtype=linear.dtype, device=linear.device).reshape(1, 3, 1, 1)
    grey = (linear * luma).sum(dim=1, keepdim=True)
    saturated = (grey + _per_item(gamut) * (linear - grey)).clamp(min=0.0)
    return saturated * _per_item(white_point) * _per_item(brightness)


def add_glare(light: torch.Tensor, black_level: torch.Tensor) -> torch.Tensor:
    """Light a black screen still sends the camera (backlight bleed, ambient reflections), as a
    fraction of white; uniform, so it carries no subpixel structure."""
    return light + _per_item(black_level)


def _lit_length(x: torch.Tensor, start: float | torch.Tensor, length: float | torch.Tensor) -> torch.Tensor:
    """Lit length in [0, x] of a pattern with period 1 lit on [start, start + length)."""
    whole = torch.floor(x)
    return whole * length + torch.minimum(torch.clamp(x - whole - start, min=0.0), torch.as_tensor(length))


def box_coverage(
    x: torch.Tensor, width: torch.Tensor, start: torch.Tensor, length: torch.Tensor
) -> torch.Tensor:
    """Fraction of a box of `width` centred at x that falls on [start, start+length) mod 1.

    Integrating the layout over each sample's footprint (instead of point-sampling it) is what
    keeps a coarse sample grid free of aliasing that a real pixel would not see.
    """
    high = _lit_length(x + width / 2, start, length)
    low = _lit_length(x - width / 2, start, length)
    return (high - low) / width


def subpixel_coverage(
    u: torch.Tensor, v: torch.Tensor, footprint: torch.Tensor, layout: str, fill_factor: torch.Tensor
) -> torch.Tensor:
    """Relative emission (mean 1 per channel) of R, G, B over sample footprints at (u, v).

    u, v: (B, H, W) display coordinates in pixels (pixel i spans [i, i+1)); footprint: (B,) sample
    width in display pixels; fill_factor: (B,) lit fraction of each subpixel along both axes, the
    rest being black matrix. `pentile` (RGBG) gives every pixel a green subpixel and alternates red
    and blue between neighbouring pixels in a checkerboard, as OLED phone panels do.
    """
    width = footprint.reshape(-1, 1, 1)
    fill = fill_factor.reshape(-1, 1, 1)
    rows = box_coverage(v, width, (1.0 - fill) / 2.0, fill) / fill
    if layout in STRIPE_COLUMNS:
        stripe = fill / 3.0
        channels = [
            rows * box_coverage(u, width, (column + (1.0 - fill) / 2.0) / 3.0, stripe) / stripe
            for column in STRIPE_COLUMNS[layout]
        ]
        return torch.stack(channels, dim=1)
    if layout != "pentile":
        raise ValueError(f"unknown subpixel layout {layout!r}; allowed: {', '.join(SUBPIXEL_LAYOUTS)}")
    half = fill / 2.0
    left = rows * box_coverage(u, width, (1.0 - fill) / 4.0, half) / half
    right = rows * box_coverage(u, width, 0.5 + (1.0 - fill) / 4.0, half) / half
    column, row = torch.floor(u), torch.floor(v)
    red_pixel = ((column + row) % 2 == 0).to(u.dtype)
    # Green sits right of red/blue on even rows and left on odd ones, so on average every colour
    # is centred on its pixel, as the clean target is.
    even_row = (row % 2 == 0).to(u.dtype)
    green = even_row * right + (1.0 - even_row) * left
    red_blue = even_row * left + (1.0 - even_row) * right
    # Red and blue each light half of the pixels, so each counts double to keep its mean at 1.
    return torch.stack([2.0 * red_blue * red_pixel, green, 2.0 * red_blue * (1.0 - red_pixel)], dim=1)


def on_panel(u: torch.Tensor, v: torch.Tensor, side: int) -> torch.Tensor:
    """(B, 1, H, W) 1 where display coords (u, v) fall on a panel of `side` pixels, else 0 (black outside)."""
    return ((u >= 0) & (u < side) & (v >= 0) & (v < side)).unsqueeze(1).to(u.dtype)


def white_screen_light(u: torch.Tensor, v: torch.Tensor, coverage: torch.Tensor, side: int) -> torch.Tensor:
    """`emitted_light` of a panel of `side` pixels showing full white: its coverage, where the panel is.

    No pixel values to gather, which is most of `emitted_light`'s cost.
    """
    return coverage * on_panel(u, v, side)


def emitted_light(
    panel: torch.Tensor, u: torch.Tensor, v: torch.Tensor, coverage: torch.Tensor
) -> torch.Tensor:
    """Light reaching samples at display coords (u, v): the pixel under each sample × its coverage.

    panel: (B, 3, N, N) linear light per display pixel; black outside the panel.
    """
    batch, channels, height, width = panel.shape
    iu, iv = torch.floor(u).long(), torch.floor(v).long()
    inside = (iu >= 0) & (iu < width) & (iv >= 0) & (iv < height)
    flat_index = (iv.clamp(0, height - 1) * width + iu.clamp(0, width - 1)).reshape(batch, 1, -1)
    pixels = panel.reshape(batch, channels, -1).gather(2, flat_index.expand(-1, channels, -1))
    pixels = pixels.reshape(batch, channels, *u.shape[1:])
    return pixels * coverage * inside.unsqueeze(1)
