"""Camera pose and lens: where each sensor sample looks on the screen, distortion, blur, vignetting."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.moire.portable import portable
from pipeline.moire.sensor import RGGB, aperture_offsets, bayer_mosaic


def pitch_ratio(
    display_pitch_mm: float, distance_mm: float, focal_length_mm: float, sensor_pitch_um: float
) -> float:
    """Display pixel pitch imaged on the sensor, in sensor pixels (thin lens, screen in focus).

    Moiré is strongest near 1: the display grid then beats against the sensor grid at low
    frequency. The magnification of a thin lens focused at `distance_mm` is f / (d − f).
    """
    imaged_mm = display_pitch_mm * focal_length_mm / (distance_mm - focal_length_mm)
    return imaged_mm / (sensor_pitch_um / 1000.0)


def screen_margin(rotation_deg: float, tilt: float, radial_distortion: float) -> float:
    """How much larger than the frame the imaged screen must be so the frame never sees its edge.

    Bounds the display extent seen by the frame's corners: rotation spreads a corner over
    |cos|+|sin|, outward distortion (k1 > 0) moves samples out by up to 1 + 2·k1, and the tilt's
    projective divide 1 − k·(x·cos φ + y·sin φ) is smallest at a corner along φ = 45°.
    """
    theta = math.radians(rotation_deg)
    stretch = 1.0 + 2.0 * max(radial_distortion, 0.0)
    divide = 1.0 - math.sqrt(2.0) * tilt * stretch
    return (abs(math.cos(theta)) + abs(math.sin(theta))) * stretch / divide * 1.02


def camera_homography(
    display_size: int, out_size: int, pitch: float, rotation_deg: float,
    tilt: float, tilt_direction_deg: float,
) -> np.ndarray:
    """3×3 map from display pixel coords to sensor pixel coords (centred, scaled, rotated, tilted).

    `pitch` is the display pixel pitch on the sensor, in sensor pixels. `tilt` is the relative
    change of scale from the frame centre to its edge along `tilt_direction_deg`.
    """
    centre_display = np.array([[1, 0, -display_size / 2], [0, 1, -display_size / 2], [0, 0, 1]])
    theta = math.radians(rotation_deg)
    rotate_scale = np.array([
        [pitch * math.cos(theta), -pitch * math.sin(theta), 0],
        [pitch * math.sin(theta), pitch * math.cos(theta), 0],
        [0, 0, 1],
    ])
    phi = math.radians(tilt_direction_deg)
    k = tilt / (out_size / 2)
    perspective = np.array([[1, 0, 0], [0, 1, 0], [k * math.cos(phi), k * math.sin(phi), 1]])
    to_frame = np.array([[1, 0, out_size / 2], [0, 1, out_size / 2], [0, 0, 1]])
    return to_frame @ perspective @ rotate_scale @ centre_display


def frame_offsets(out_size: int, supersample: int, device: torch.device) -> torch.Tensor:
    """Sub-sample centres of the frame along one axis, as offsets from its centre in half-frame units."""
    centres = (torch.arange(out_size * supersample, dtype=torch.float64, device=device) + 0.5) / supersample
    return (centres - out_size / 2) / (out_size / 2)


def sensor_samples_on_display(
    homographies: torch.Tensor, out_size: int, supersample: int, radial_distortion: torch.Tensor,
    aperture: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Display coords (u, v), (B, H·s, W·s), seen by the sub-samples of each pixel's sensitive area.

    Sub-samples of pixel i sit at i + ½ + aperture_offsets. The lens moves each by the radial model
    x·(1 + k1·r²), r = 1 at the middle of each frame edge: k1 > 0 samples further out towards the
    corners, which compresses content there (barrel distortion), k1 < 0 gives pincushion. Straight
    display rows image as curves; the clean target uses the same coordinates.
    """
    batch, n = homographies.shape[0], out_size * supersample
    pixel = (torch.arange(n, device=homographies.device) // supersample).to(torch.float64)
    offsets = aperture_offsets(supersample, aperture).repeat(1, out_size)  # (B, n)
    half = out_size / 2
    along = (pixel + 0.5 + offsets - half) / half  # (B, n), half-frame units
    xs, ys = along.reshape(batch, 1, n), along.reshape(batch, n, 1)
    # With sensor coords s = half·(1 + x·scale), each row of the inverse map m is
    # m·s = scale·(a·x + b·y) + c: per-axis terms in float64 on the (B, n) axes, then three
    # broadcast passes per coordinate over the (B, n, n) grid.
    m = torch.linalg.inv(homographies.to(torch.float64)).reshape(batch, 3, 3, 1, 1)
    k1 = radial_distortion.to(torch.float64).reshape(-1, 1, 1)
    scale = ((k1 * xs**2).to(torch.float32) + (1.0 + k1 * ys**2).to(torch.float32))

    def mapped(row: int) -> torch.Tensor:
        a, b, c = half * m[:, row, 0], half * m[:, row, 1], half * (m[:, row, 0] + m[:, row, 1]) + m[:, row, 2]
        return ((a * xs).to(torch.float32) + (b * ys).to(torch.float32)).mul_(scale).add_(c.to(torch.float32))

    # float32 keeps display coordinates (< 10⁴) to ~10⁻³ px, far below anything the layout resolves.
    w = mapped(2)
    return mapped(0).div_(w), mapped(1).div_(w)


def vignetting(out_size: int, supersample: int, strength: torch.Tensor) -> torch.Tensor:
    """Relative illumination (B, 1, H, W): 1 at the centre, 1 − strength in the frame's corners."""
    half_squares = frame_offsets(out_size, supersample, strength.device) ** 2 / 2.0
    radius_sq = (half_squares[None, :] + half_squares[:, None]).to(torch.float32)  # 1 in the corners
    return 1.0 - strength.reshape(-1, 1, 1, 1) * radius_sq


def focus_weight(out_size: int, supersample: int, position: torch.Tensor, direction_deg: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) how far each sample lies from the capture's focus line, 0 on it to 1 a half-frame away or more.

    A tilted screen's depth changes along the tilt's direction; the line in focus crosses that
    direction at `position` half-frames from the centre.
    """
    offsets = frame_offsets(out_size, supersample, position.device).to(torch.float32)
    angle = torch.deg2rad(direction_deg).reshape(-1, 1, 1, 1)
    along = (portable(torch.cos, angle) * offsets.reshape(1, 1, 1, -1)
             + portable(torch.sin, angle) * offsets.reshape(1, 1, -1, 1))
    return (along - position.reshape(-1, 1, 1, 1)).abs().clamp(max=1.0)


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 2·radius+1) normalised 1-D Gaussians, each cut at its own ⌈3σ⌉; sigma 0 gives the identity.

    Cutting per capture (not at the batch's widest radius) keeps a capture's result independent
    of which other captures share its batch.
    """
    taps = torch.arange(-radius, radius + 1, dtype=sigma.dtype, device=sigma.device)
    safe = sigma.clamp(min=1e-3).reshape(-1, 1)
    own_radius = torch.ceil(3 * sigma).clamp(min=1).reshape(-1, 1)
    kernels = portable(torch.exp, -0.5 * (taps / safe) ** 2) * (taps.abs() <= own_radius)
    return kernels / kernels.sum(dim=1, keepdim=True)


def _filter_along(image: torch.Tensor, weights: torch.Tensor, axis: int, first: int = 0, step: int = 1) -> torch.Tensor:
    """One 1-D pass of (B, 1, 1, 1, taps) `weights` along `axis` (-1: columns, -2: rows), reflect borders,
    evaluated only at positions first, first + step, … of that axis."""
    radius = weights.shape[-1] // 2
    size = image.shape[axis]
    count = len(range(first, size, step))
    if axis == -2:
        padded = F.pad(image, (0, 0, radius, radius), mode="reflect")

        def tap(k: int) -> torch.Tensor:
            return padded[..., k + first : k + size : step, :]
    else:
        # Strided reads along a row defeat vectorisation: split the columns into `step` contiguous
        # phases once, so every tap is a contiguous slice of one of them.
        padded = F.pad(image, (radius, radius, 0, 0), mode="reflect")
        phases = [padded[..., phase::step].contiguous() for phase in range(step)] if step > 1 else [padded]

        def tap(k: int) -> torch.Tensor:
            start = (first + k) // step
            return phases[(first + k) % step][..., start : start + count]

    filtered = tap(0) * weights[..., 0]
    for k in range(1, 2 * radius + 1):
        filtered.addcmul_(tap(k), weights[..., k])
    return filtered


def _filter_weights(image: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """(B, taps) kernels shaped to weigh (B, C, H, W) slices."""
    return kernels.to(image.dtype).reshape(kernels.shape[0], 1, 1, 1, -1)


def separable_filter(image: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Filter each capture of (B, C, H, W) with its own 1-D kernel along both axes (reflect borders)."""
    return _filtered(image, kernels, rows=True, columns=True)


def filter_rows(image: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """`separable_filter`'s first half: each row of (B, C, H, W) filtered with its capture's (B, taps) kernel."""
    return _filtered(image, kernels, rows=True, columns=False)


def filter_columns(image: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """`separable_filter`'s second half: each column filtered with its capture's kernel."""
    return _filtered(image, kernels, rows=False, columns=True)


def _filtered(image: torch.Tensor, kernels: torch.Tensor, rows: bool, columns: bool) -> torch.Tensor:
    """(B, C, H, W) filtered along its rows, its columns or both with each capture's (B, taps) kernel.

    On the CPU in float32, OpenCV's separable filter (`_opencv_filter`); elsewhere in-place multiply-adds
    of shifted slices rather than a grouped conv2d, which on one CPU core was 9× faster than torch's
    depthwise convolution for the kernel sizes used here.
    """
    if _opencv_applies(image, kernels):
        return _opencv_filter(image, kernels, rows, columns)
    weights = _filter_weights(image, kernels)
    if rows:
        image = _filter_along(image, weights, -1)
    return _filter_along(image, weights, -2) if columns else image


def _opencv_applies(image: torch.Tensor, kernels: torch.Tensor) -> bool:
    """Whether `_opencv_filter` can take (B, C, H, W) `image` and its (B, taps) `kernels`: float32 on the CPU,
    no gradient to keep."""
    return (image.device.type == "cpu" and image.dtype == torch.float32
            and not image.requires_grad and not kernels.requires_grad)


def _opencv_filter(image: torch.Tensor, kernels: torch.Tensor, rows: bool, columns: bool) -> torch.Tensor:
    """Each capture's planes through OpenCV's `sepFilter2D` with its own (B, taps) kernel along rows, columns
    or both; borders reflected as `F.pad`'s "reflect" does (OpenCV's REFLECT_101).

    One pass of OpenCV's vectorised rows-then-columns filter instead of a multiply-add per tap over the
    whole frame: 4× faster on one core for 5–13 taps at 1200² (measured); the sums' order differs, so
    results differ from `_filter_along`'s in the last bit.
    """
    source = image.contiguous().numpy()
    filtered = np.empty_like(source)
    identity = np.ones(1, dtype=np.float32)
    # one kernel for the whole batch, as the tap loop's broadcasting allows
    kernels = kernels.to(torch.float32).expand(image.shape[0], -1).numpy()
    for capture, kernel in enumerate(kernels):
        kernel = _trimmed(kernel)
        along_rows, along_columns = (kernel if rows else identity), (kernel if columns else identity)
        for plane in range(source.shape[1]):
            cv2.sepFilter2D(source[capture, plane], cv2.CV_32F, along_rows, along_columns,
                            dst=filtered[capture, plane], borderType=cv2.BORDER_REFLECT_101)
    return torch.from_numpy(filtered)


def _trimmed(kernel: np.ndarray) -> np.ndarray:
    """A centred 1-D kernel without the zero taps at its ends (a capture's own 3σ cut inside the batch's radius)."""
    nonzero = np.flatnonzero(kernel)
    radius = max(len(kernel) // 2 - int(nonzero[0]), int(nonzero[-1]) - len(kernel) // 2)
    centre = len(kernel) // 2
    return np.ascontiguousarray(kernel[centre - radius : centre + radius + 1])


def blurred_mosaic(light: torch.Tensor, sigma_px: torch.Tensor) -> torch.Tensor:
    """`bayer_mosaic(lens_blur(light, sigma_px))`, (B, 3, H, W) → (B, 1, H, W), the same numbers.

    On the CPU in float32, OpenCV blurs whole frames and the mosaic keeps one colour of each pixel: its
    vectorised filter is faster than a tap loop over the kept pixels alone. Elsewhere each colour is
    blurred only where the mosaic keeps it (the row pass at that colour's columns, the column pass at its
    pixels), half the work of blurring all of it.
    """
    if float(sigma_px.max()) <= 0:
        return bayer_mosaic(light)
    kernels = gaussian_kernels(sigma_px, blur_radius(sigma_px))
    if _opencv_applies(light, kernels):
        return bayer_mosaic(_opencv_filter(light, kernels, True, True))
    weights = _filter_weights(light, kernels)
    raw = torch.empty_like(light[:, :1])
    for dy in (0, 1):
        for dx in (0, 1):
            channel = RGGB[dy][dx]
            along_rows = _filter_along(light[:, channel : channel + 1], weights, -1, first=dx, step=2)
            raw[:, :, dy::2, dx::2] = _filter_along(along_rows, weights, -2, first=dy, step=2)
    return raw


def blur_radius(sigma: torch.Tensor) -> int:
    """Taps each side that hold the widest of these Gaussians out to 3σ."""
    return max(1, int(torch.ceil(3 * sigma.max())))


def lens_blur(image: torch.Tensor, sigma_px: torch.Tensor) -> torch.Tensor:
    """Gaussian defocus blur, sigma per capture in pixels of `image`'s own grid."""
    if float(sigma_px.max()) <= 0:
        return image
    return separable_filter(image, gaussian_kernels(sigma_px, blur_radius(sigma_px)))
