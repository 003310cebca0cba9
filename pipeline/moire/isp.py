"""The camera's image signal processor: demosaic, white balance, tone curve, sharpening."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.moire.optics import blur_radius, filter_columns, filter_rows, gaussian_kernels, separable_filter
from pipeline.moire.sensor import crosstalk_weights, power_law

SHARPEN_SIGMA = 1.0  # radius of the unsharp mask, pixels: what phone ISPs use for detail


def _with_neighbour(plane: torch.Tensor, axis: int, step: int) -> torch.Tensor:
    """Each value of a colour plane plus its neighbour `step` (+1 or -1) along `axis`, the edge value repeated
    where there is none: the sum written in one pass, with no shifted copy of the plane."""
    total = torch.empty_like(plane)
    return _add_neighbour_(total, plane, axis, step, into_self=False)


def _add_neighbour_(total: torch.Tensor, plane: torch.Tensor, axis: int, step: int,
                    into_self: bool = True) -> torch.Tensor:
    """`total` plus `plane`'s neighbour `step` along `axis` (the edge value repeated), in place; with
    `into_self=False`, `total` is overwritten with `plane` plus that neighbour instead. Additions in the order
    `a + neighbour`, so the sums are the bits an expression with a shifted copy gives."""
    n = plane.shape[axis]
    here, there = (0, 1) if step > 0 else (1, 0)  # where each value sits, and where its neighbour does
    edge = n - 1 if step > 0 else 0
    base = total if into_self else plane
    torch.add(base.narrow(axis, here, n - 1), plane.narrow(axis, there, n - 1), out=total.narrow(axis, here, n - 1))
    torch.add(base.narrow(axis, edge, 1), plane.narrow(axis, edge, 1), out=total.narrow(axis, edge, 1))
    return total


def demosaic(raw: torch.Tensor) -> torch.Tensor:
    """Bilinear demosaic of an RGGB mosaic (B, 1, H, W) into (B, 3, H, W), reflect borders.

    Each missing value is the mean of its nearest recorded neighbours: red and blue from a
    separable [½ 1 ½]² stencil, green from its four direct neighbours. Worked on the four
    half-resolution planes of the 2×2 tile (a reflected neighbour across the frame's edge is the
    plane's own edge value), so only missing values are computed, each from its two or four, and
    written straight into the output's strided views (no shifted copies: 1.3–1.4× faster, the same bits).
    """
    height, width = raw.shape[2:]
    if height % 2 or width % 2:  # an even frame with the reflected row or column; cropped below
        raw = F.pad(raw, (0, width % 2, 0, height % 2), mode="reflect")
    rows, columns = -2, -1
    red, green_red_rows = raw[:, 0, 0::2, 0::2], raw[:, 0, 0::2, 1::2]
    green_blue_rows, blue = raw[:, 0, 1::2, 0::2], raw[:, 0, 1::2, 1::2]
    rgb = torch.empty((raw.shape[0], 3, *raw.shape[2:]), dtype=raw.dtype, device=raw.device)
    out_red, out_green, out_blue = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    red_pairs = _with_neighbour(red, columns, 1)
    out_red[:, 0::2, 0::2] = red
    torch.mul(red_pairs, 0.5, out=out_red[:, 0::2, 1::2])
    torch.mul(_with_neighbour(red, rows, 1), 0.5, out=out_red[:, 1::2, 0::2])
    torch.mul(_with_neighbour(red_pairs, rows, 1), 0.25, out=out_red[:, 1::2, 1::2])
    out_green[:, 0::2, 1::2] = green_red_rows
    out_green[:, 1::2, 0::2] = green_blue_rows
    at_red = _with_neighbour(green_blue_rows, rows, -1)  # a red site's greens: below + above, then left, then right
    _add_neighbour_(at_red, green_red_rows, columns, -1).add_(green_red_rows)
    torch.mul(at_red, 0.25, out=out_green[:, 0::2, 0::2])
    at_blue = _with_neighbour(green_red_rows, rows, 1).add_(green_blue_rows)  # above + below, then left, then right
    torch.mul(_add_neighbour_(at_blue, green_blue_rows, columns, 1), 0.25, out=out_green[:, 1::2, 1::2])
    blue_pairs = _with_neighbour(blue, columns, -1)
    out_blue[:, 1::2, 1::2] = blue
    torch.mul(blue_pairs, 0.5, out=out_blue[:, 1::2, 0::2])
    torch.mul(_with_neighbour(blue, rows, -1), 0.5, out=out_blue[:, 0::2, 1::2])
    torch.mul(_with_neighbour(blue_pairs, rows, -1), 0.25, out=out_blue[:, 0::2, 0::2])
    return rgb[:, :, :height, :width]


def gradient_demosaic(raw: torch.Tensor) -> torch.Tensor:
    """Malvar–He–Cutler demosaic of an RGGB mosaic (B, 1, H, W) into (B, 3, H, W), reflect borders, light ≥ 0.

    Gradient-corrected linear interpolation (ICASSP 2004): the bilinear estimate of each missing colour
    plus a fixed share of the Laplacian of the colour its pixel did record, so colours share their
    detail as natural images' do; sharper and with less colour fringing than bilinear, nearer what phone
    ISPs do. The corrections are worked on the 2×2 tile's four planes of the mosaic reflected by two
    pixels (which keeps its pattern), the same numbers as its 5×5 filters.
    """
    height, width = raw.shape[2:]
    if height % 2 or width % 2:  # an even frame with the reflected row or column; cropped below
        raw = F.pad(raw, (0, width % 2, 0, height % 2), mode="reflect")
    rgb = demosaic(raw)  # its borders already are the reflected mosaic's: each missing value's neighbours are one step away
    padded = F.pad(raw, (2, 2, 2, 2), mode="reflect")[:, 0]
    planes = {(row, column): padded[:, row::2, column::2].contiguous() for row in (0, 1) for column in (0, 1)}
    h, w = raw.shape[2] // 2, raw.shape[3] // 2

    def at(site: tuple[int, int], dy: int, dx: int) -> torch.Tensor:
        """The plane of tile position `site`, shifted by (dy, dx) tiles (its reflected margin is one tile)."""
        return planes[site][:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    for site, other in (((0, 0), 2), ((1, 1), 0)):  # red and blue sites: the Laplacian of their own colour
        around = at(site, 0, -1) + at(site, 0, 1)
        around += at(site, -1, 0)
        around += at(site, 1, 0)
        laplacian = torch.add(at(site, 0, 0), around, alpha=-0.25)
        rgb[:, 1, site[0]::2, site[1]::2] += 0.5 * laplacian
        rgb[:, other, site[0]::2, site[1]::2] += 0.75 * laplacian
    # green sites: in red's rows (0, 1), red left and right, blue above and below; in blue's rows (1, 0), the reverse
    for site, (along_row, along_column), diagonal in (((0, 1), (0, 2), ((-1, 0), (-1, 1), (0, 0), (0, 1))),
                                                      ((1, 0), (2, 0), ((0, -1), (0, 0), (1, -1), (1, 0)))):
        sideways = at(site, 0, -1) + at(site, 0, 1)
        vertical = at(site, -1, 0) + at(site, 1, 0)
        opposite = (1 - site[0], 1 - site[1])
        base = at(site, 0, 0) * 5
        for dy, dx in diagonal:
            base -= at(opposite, dy, dx)
        rgb[:, along_row, site[0]::2, site[1]::2] += (base - sideways).add_(vertical, alpha=0.5).mul_(0.125)
        rgb[:, along_column, site[0]::2, site[1]::2] += base.sub_(vertical).add_(sideways, alpha=0.5).mul_(0.125)
    return rgb[:, :, :height, :width].clamp_(min=0.0)


def demosaic_each(raw: torch.Tensor, methods: list[str | None]) -> torch.Tensor:
    """Each capture's mosaic demosaiced by its own method (None or "bilinear": `demosaic`; "gradient")."""
    if all(method in (None, "bilinear") for method in methods):
        return demosaic(raw)
    if all(method == "gradient" for method in methods):
        return gradient_demosaic(raw)
    rows = torch.tensor([i for i, method in enumerate(methods) if method == "gradient"], device=raw.device)
    rgb = demosaic(raw)
    rgb[rows] = gradient_demosaic(raw[rows])
    return rgb


def colour_matrix(rgb: torch.Tensor, crosstalk: torch.Tensor) -> torch.Tensor:
    """The ISP's colour matrix: demosaiced (B, 3, H, W) camera colour back to the primaries, undoing `mix_crosstalk`.

    The inverse of a·I + b·J is (I − b·J) / a (a + 3b = 1), so flat colours come back exactly; where the
    channels were sampled at different phases of a grid, their differences come back amplified. Light is
    never negative: what the matrix pushes below zero is clipped, as an ISP clips it.
    """
    if torch.isnan(crosstalk).all():
        return rgb
    a, b = crosstalk_weights(crosstalk)
    return ((rgb - b * rgb.sum(dim=1, keepdim=True)) / a).clamp_(min=0.0)


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
    return power_law(linear, 1.0 / gamma.reshape(-1, 1, 1, 1), ceiling=1.0)


CHROMA_LUMA = (0.299, 0.587, 0.114)  # BT.601, the luma a camera's ISP separates chroma from


def denoise_chroma(rgb: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur colour differences (not luma) by a Gaussian of `sigma` pixels per capture.

    Phone ISPs smooth chroma far more than luma to hide colour noise; it also smooths the fine
    false colour that demosaicing makes of an aliased screen grid, leaving its wide colour bands.
    The three colour differences weigh to zero against the luma weights, and blurring keeps that,
    so only red's and blue's are blurred and green's follows from them.
    """
    if float(sigma.max()) <= 0:
        return rgb
    luma = _luma(rgb)
    red_blue = separable_filter(rgb[:, 0::2] - luma, _chroma_kernels(rgb, sigma))
    return _from_luma_and_red_blue(luma, red_blue)


def shrink_denoised(rgb: torch.Tensor, sigma: torch.Tensor, size: int) -> torch.Tensor:
    """`shrink_to(denoise_chroma(rgb, sigma), size)`, the same to float rounding and 5–25 % faster (measured).

    Both are linear and separable, and the shrink resamples rows before columns: so the chroma's
    column pass runs after the shrink's row pass, on a frame `size` wide instead of the camera's,
    and luma and colour are put back together at the output's size.
    """
    if float(sigma.max()) <= 0 or rgb.shape[-2:] == (size, size):
        return shrink_to(denoise_chroma(rgb, sigma), size)
    luma = _luma(rgb)
    kernels = _chroma_kernels(rgb, sigma)
    height = rgb.shape[-2]
    # luma and colour shrunk apart: joining them at the camera's size would copy three full frames
    red_blue = filter_columns(_resampled(filter_rows(rgb[:, 0::2] - luma, kernels), height, size), kernels)
    small = _resampled(torch.cat([_resampled(luma, height, size), red_blue], dim=1), size, size)
    return _from_luma_and_red_blue(small[:, :1], small[:, 1:]).clamp_(0.0, 1.0)


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) BT.601 luma of (B, 3, H, W)."""
    red, green, blue = CHROMA_LUMA
    # in place: three passes over the camera's frame, not five with two temporaries (2.7× faster at 1600²)
    luma = rgb[:, 0:1] * red
    return luma.add_(rgb[:, 1:2], alpha=green).add_(rgb[:, 2:3], alpha=blue)


def _chroma_kernels(rgb: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The chroma smoothing's (B, taps) Gaussians in `rgb`'s dtype."""
    return gaussian_kernels(sigma.to(rgb.dtype), blur_radius(sigma))


def _from_luma_and_red_blue(luma: torch.Tensor, red_blue: torch.Tensor) -> torch.Tensor:
    """RGB from luma and the red and blue colour differences (green's is what weighs them to zero)."""
    red, green, blue = CHROMA_LUMA
    green_difference = (red * red_blue[:, :1] + blue * red_blue[:, 1:]) / -green
    return torch.cat([red_blue[:, :1], green_difference, red_blue[:, 1:]], dim=1).add_(luma)


def shrink_to(image: torch.Tensor, size: int) -> torch.Tensor:
    """Downscale the camera's frame to the dataset's `size`, with an anti-aliasing bicubic filter.

    Real moiré datasets are phone photos of 12–48 MP shrunk to 4K, 1080p or 256²: the shrink keeps
    the wide beat bands and averages away most of the fine screen-grid texture.
    """
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    return _resampled(image, size, size).clamp(0.0, 1.0)


def _resampled(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`image` resampled to height × width by the shrink's anti-aliasing bicubic filter (rows first, then columns)."""
    return F.interpolate(image, size=(height, width), mode="bicubic", antialias=True, align_corners=False)


def sharpen(image: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Unsharp mask: add `amount` × (image − blurred image), clipped to [0, 1]."""
    if float(amount.max()) <= 0:
        return image
    sigma = torch.full_like(amount, SHARPEN_SIGMA, dtype=image.dtype)
    blurred = separable_filter(image, gaussian_kernels(sigma, radius=3))
    # image + amount·(image − blurred), in place on the blurred copy: the same numbers, no temporaries
    return blurred.sub_(image).mul_(-amount.reshape(-1, 1, 1, 1)).add_(image).clamp_(0.0, 1.0)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] float → uint8 with rounding."""
    return (image * 255.0).round_().clamp_(0, 255).to(torch.uint8)
