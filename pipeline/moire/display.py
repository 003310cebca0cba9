"""The screen: panel colour response, and source pixels emitted through a subpixel layout.

Images are (B, C, H, W) float tensors; per-capture parameters are (B,) tensors, so a whole batch
of captures with different parameters runs at once on CPU or CUDA.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from pipeline.moire.fused import Fused

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

    A 256-entry table per capture: a lookup is several times cheaper than a power. On the CPU, OpenCV looks
    the bytes up as they are; elsewhere (and for tables that need a gradient) the tables are read as one flat
    table with 32-bit indices (capture b's at b·256 onwards), which on one CPU core took 2.5× less time than a
    gather, which needs 64-bit ones.
    """
    levels = torch.arange(256, dtype=torch.float32, device=encoded.device) / 255.0
    tables = levels[None] ** gamma.reshape(-1, 1).to(torch.float32)  # (B, 256)
    if encoded.device.type == "cpu" and encoded.dtype == torch.uint8 and not tables.requires_grad and len(encoded):
        # OpenCV's table lookup reads the bytes as they are, without widening them to indices first: the
        # whole decode 13.3 → 2.9 ms at 900² (docs/benchmarks.md)
        pixels = encoded.contiguous().numpy()
        linear = [cv2.LUT(image.reshape(-1, image.shape[-1]), table) for image, table in zip(pixels, tables.numpy())]
        return torch.from_numpy(np.stack(linear)).reshape(encoded.shape)
    index = encoded.to(torch.int32)
    if encoded.shape[0] > 1:
        index += 256 * torch.arange(encoded.shape[0], dtype=torch.int32, device=encoded.device).reshape(-1, 1, 1, 1)
    return tables.reshape(-1).index_select(0, index.reshape(-1)).reshape(encoded.shape)


def panel_colour(
    linear: torch.Tensor, gamut: torch.Tensor, white_point: torch.Tensor, brightness: torch.Tensor,
) -> torch.Tensor:
    """The panel's rendering of linear sRGB: its gamut (saturation), white point and brightness.

    `gamut` scales saturation around luma (1 = the source's primaries), `white_point` is a (B, 3)
    gain per channel and `brightness` scales the whole panel.
    """
    # grey + gamut·(x − grey), grey the luma of x, then the channel gains: one 3×3 matrix per capture
    # (a pass over the pixels instead of eight); the gains are positive, so they commute with the clamp.
    luma = torch.tensor(LUMA, dtype=linear.dtype, device=linear.device).reshape(1, 1, 3)
    gamut = gamut.to(linear.dtype).reshape(-1, 1, 1)
    identity = torch.eye(3, dtype=linear.dtype, device=linear.device)
    gains = (white_point * brightness.reshape(-1, 1)).to(linear.dtype).reshape(-1, 3, 1)
    matrix = gains * (gamut * identity + (1.0 - gamut) * luma)
    return colour_matrix(matrix, linear).clamp_(min=0.0)


def colour_matrix(matrix: torch.Tensor, linear: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) each pixel's colour times its capture's (B, 3, 3) matrix, as multiplies and adds in a fixed order.

    An einsum is a matrix product, whose last bits follow the kernel MKL picks for the CPU (pipeline.moire.portable);
    these are the same on any CPU, and on one core took 4.6 ms at 700² against the einsum's 5.0.
    """
    weights = matrix.reshape(-1, 3, 3, 1, 1)
    mixed = torch.empty_like(linear)
    for row in range(3):
        torch.mul(linear[:, 0], weights[:, row, 0], out=mixed[:, row])
        mixed[:, row].addcmul_(linear[:, 1], weights[:, row, 1]).addcmul_(linear[:, 2], weights[:, row, 2])
    return mixed


def add_glare(light: torch.Tensor, black_level: torch.Tensor) -> torch.Tensor:
    """Light a black screen still sends the camera (backlight bleed, ambient reflections), as a
    fraction of white; uniform, so it carries no subpixel structure."""
    return light + _per_item(black_level)


def footprint_edges(x: torch.Tensor, width: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For boxes of `width` centred at x: the whole periods (of 1) between their edges, and each edge's
    place within its period, in [0, 1); what `lit_fraction` needs, shared by every stripe of a layout."""
    high, low = x + width / 2, x - width / 2
    whole_high, whole_low = torch.floor(high), torch.floor(low)
    high.sub_(whole_high)
    low.sub_(whole_low)
    return whole_high.sub_(whole_low), high, low


def lit_fraction(
    edges: tuple[torch.Tensor, torch.Tensor, torch.Tensor], width: torch.Tensor, start: torch.Tensor,
    length: torch.Tensor,
) -> torch.Tensor:
    """Fraction of each box (`footprint_edges`) that falls on [start, start+length) mod 1.

    Whole periods count `length` each; the partial ones at the edges are clamped differences,
    which is exact and needs no division per sample.
    """
    whole, high, low = edges
    lit = (high - start).clamp_(min=0.0).clamp_(max=length)
    lit.sub_((low - start).clamp_(min=0.0).clamp_(max=length))
    return lit.addcmul_(whole, length).div_(width)


def box_coverage(
    x: torch.Tensor, width: torch.Tensor, start: torch.Tensor, length: torch.Tensor
) -> torch.Tensor:
    """Fraction of a box of `width` centred at x that falls on [start, start+length) mod 1.

    Integrating the layout over each sample's footprint (instead of point-sampling it) is what
    keeps a coarse sample grid free of aliasing that a real pixel would not see.
    """
    return lit_fraction(footprint_edges(x, width), width, start, length)


def subpixel_coverage(
    u: torch.Tensor, v: torch.Tensor, footprint: torch.Tensor, layout: str, fill_factor: torch.Tensor
) -> torch.Tensor:
    """Relative emission (mean 1 per channel) of R, G, B over sample footprints at (u, v).

    u, v: (B, H, W) display coordinates in pixels (pixel i spans [i, i+1)); footprint: (B,) sample
    width in display pixels; fill_factor: (B,) lit fraction of each subpixel along both axes, the
    rest being black matrix. `pentile` (RGBG) gives every pixel a green subpixel and alternates red
    and blue between neighbouring pixels in a checkerboard, as OLED phone panels do.
    """
    width = footprint.reshape(-1, 1, 1, 1)
    fill = fill_factor.reshape(-1, 1, 1, 1)
    u, v = u.unsqueeze(1), v.unsqueeze(1)
    rows = box_coverage(v, width, (1.0 - fill) / 2.0, fill).div_(fill)  # (B, 1, H, W)
    # Every stripe of a pixel is the same box pattern shifted: one broadcast over (B, stripes, H, W).
    columns = footprint_edges(u, width)
    if layout in STRIPE_COLUMNS:
        stripe = fill / 3.0
        starts = (torch.tensor(STRIPE_COLUMNS[layout], dtype=u.dtype, device=u.device).reshape(1, 3, 1, 1)
                  + (1.0 - fill) / 2.0) / 3.0
        return lit_fraction(columns, width, starts, stripe).mul_(rows / stripe)
    if layout != "pentile":
        raise ValueError(f"unknown subpixel layout {layout!r}; allowed: {', '.join(SUBPIXEL_LAYOUTS)}")
    half = fill / 2.0
    starts = torch.tensor((0.0, 0.5), dtype=u.dtype, device=u.device).reshape(1, 2, 1, 1) + (1.0 - fill) / 4.0
    left, right = lit_fraction(columns, width, starts, half).mul_(rows / half).unbind(1)
    row = torch.floor(v[:, 0])
    red_pixel = torch.remainder(torch.floor(u[:, 0]).add_(row), 2) == 0
    # Green sits right of red/blue on even rows and left on odd ones, so on average every colour
    # is centred on its pixel, as the clean target is.
    even_row = torch.remainder(row, 2) == 0
    # Red and blue each light half of the pixels, so each counts double to keep its mean at 1.
    red_blue = torch.where(even_row, left, right).mul_(2.0)
    zero = torch.zeros((), dtype=u.dtype, device=u.device)
    return torch.stack([torch.where(red_pixel, red_blue, zero), torch.where(even_row, right, left),
                        torch.where(red_pixel, zero, red_blue)], dim=1)


# The same coverage, compiled in long runs of camera-sized frames (pipeline.moire.fused): the same bits,
# 5–7× faster there.
fused_subpixel_coverage = Fused(subpixel_coverage)


def on_panel(u: torch.Tensor, v: torch.Tensor, side: int) -> torch.Tensor:
    """(B, 1, H, W) 1 where display coords (u, v) fall on a panel of `side` pixels, else 0 (black outside)."""
    return ((u >= 0) & (u < side) & (v >= 0) & (v < side)).unsqueeze(1).to(u.dtype)


def white_screen_light(u: torch.Tensor, v: torch.Tensor, coverage: torch.Tensor, side: int) -> torch.Tensor:
    """`emitted_light` of a panel of `side` pixels showing full white: its coverage, where the panel is.

    No pixel values to gather, which is most of `emitted_light`'s cost; and a frame that sees only
    the panel, as the poses' margins make every frame, needs no mask either (two reductions are
    cheaper than the mask's compares).
    """
    (u_low, u_high), (v_low, v_high) = torch.aminmax(u), torch.aminmax(v)
    if min(float(u_low), float(v_low)) >= 0 and max(float(u_high), float(v_high)) < side:
        return coverage
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
