"""Camera pose and lens: where each sensor sample looks on the screen, distortion, blur, vignetting."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


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
    """How much larger than the frame the imaged screen must be so the frame never sees its edge."""
    theta = math.radians(rotation_deg)
    # Pincushion distortion (k1 > 0) pushes the corners' samples outward by up to (1 + 2·k1).
    stretch = 1.0 + 2.0 * max(radial_distortion, 0.0)
    return (abs(math.cos(theta)) + abs(math.sin(theta))) * stretch / (1.0 - tilt) * 1.02


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


def frame_radius(out_size: int, supersample: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-sample centres of the frame, as offsets from its centre in half-frame units (x, y)."""
    n = out_size * supersample
    centres = (torch.arange(n, dtype=torch.float64, device=device) + 0.5) / supersample
    offsets = (centres - out_size / 2) / (out_size / 2)
    ys, xs = torch.meshgrid(offsets, offsets, indexing="ij")
    return xs, ys


def sensor_samples_on_display(
    homographies: torch.Tensor, out_size: int, supersample: int, radial_distortion: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Display coords (u, v), (B, H·s, W·s), seen by each sub-sample through a distorting lens.

    The lens bends rays by the radial model x·(1 + k1·r²), r = 1 at the middle of each frame edge,
    so straight display rows image as curves; the clean target uses the same coordinates.
    """
    xs, ys = frame_radius(out_size, supersample, homographies.device)
    k1 = radial_distortion.to(torch.float64).reshape(-1, 1, 1)
    scale = 1.0 + k1 * (xs**2 + ys**2)
    half = out_size / 2
    sensor_x, sensor_y = half + xs * scale * half, half + ys * scale * half
    inverse = torch.linalg.inv(homographies.to(torch.float64))
    points = torch.stack([sensor_x, sensor_y, torch.ones_like(sensor_x)], dim=1)  # (B, 3, H, W)
    display = torch.einsum("bij,bjhw->bihw", inverse, points)
    u, v = display[:, 0] / display[:, 2], display[:, 1] / display[:, 2]
    return u.to(torch.float32), v.to(torch.float32)


def vignetting(out_size: int, supersample: int, strength: torch.Tensor) -> torch.Tensor:
    """Relative illumination (B, 1, H, W): 1 at the centre, 1 − strength in the frame's corners."""
    xs, ys = frame_radius(out_size, supersample, strength.device)
    radius_sq = ((xs**2 + ys**2) / 2.0).to(torch.float32)  # 1 in the corners
    return 1.0 - strength.reshape(-1, 1, 1, 1) * radius_sq


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 2·radius+1) normalised 1-D Gaussians; sigma 0 gives the identity kernel."""
    taps = torch.arange(-radius, radius + 1, dtype=sigma.dtype, device=sigma.device)
    safe = sigma.clamp(min=1e-3).reshape(-1, 1)
    kernels = torch.exp(-0.5 * (taps / safe) ** 2)
    return kernels / kernels.sum(dim=1, keepdim=True)


def separable_filter(image: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Filter each capture of (B, C, H, W) with its own 1-D kernel along both axes (reflect borders).

    A sum of shifted slices rather than a grouped conv2d: on CPU, torch's depthwise convolution
    was 5× slower than this for the kernel sizes used here.
    """
    radius = kernels.shape[1] // 2
    weights = kernels.to(image.dtype).reshape(kernels.shape[0], 1, 1, 1, -1)
    height, width = image.shape[2:]
    padded = F.pad(image, (radius, radius, 0, 0), mode="reflect")
    rows = sum(weights[..., k] * padded[..., k : k + width] for k in range(2 * radius + 1))
    padded = F.pad(rows, (0, 0, radius, radius), mode="reflect")
    return sum(weights[..., k] * padded[..., k : k + height, :] for k in range(2 * radius + 1))


def lens_blur(image: torch.Tensor, sigma_px: torch.Tensor) -> torch.Tensor:
    """Gaussian defocus blur, sigma per capture in pixels of `image`'s own grid."""
    largest = float(sigma_px.max())
    if largest <= 0:
        return image
    radius = max(1, math.ceil(3 * largest))
    return separable_filter(image, gaussian_kernels(sigma_px, radius))
