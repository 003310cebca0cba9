"""Camera pose and lens: where each sensor sample looks on the screen, and optical blur."""

from __future__ import annotations

import math

import cv2
import numpy as np


def screen_margin(rotation_deg: float, tilt: float) -> float:
    """How much larger than the frame the imaged screen must be so the frame never sees its edge."""
    theta = math.radians(rotation_deg)
    return (abs(math.cos(theta)) + abs(math.sin(theta))) / (1.0 - tilt) * 1.02


def camera_homography(
    display_size: int, out_size: int, pitch_ratio: float, rotation_deg: float,
    tilt: float, tilt_direction_deg: float,
) -> np.ndarray:
    """3×3 map from display pixel coords to sensor pixel coords (centred, scaled, rotated, tilted).

    `pitch_ratio` is the display pixel pitch imaged on the sensor, in sensor pixels; moiré is
    strongest near 1. `tilt` is the relative change of scale from the frame centre to its edge.
    """
    centre_display = np.array([[1, 0, -display_size / 2], [0, 1, -display_size / 2], [0, 0, 1]])
    theta = math.radians(rotation_deg)
    rotate_scale = np.array([
        [pitch_ratio * math.cos(theta), -pitch_ratio * math.sin(theta), 0],
        [pitch_ratio * math.sin(theta), pitch_ratio * math.cos(theta), 0],
        [0, 0, 1],
    ])
    phi = math.radians(tilt_direction_deg)
    k = tilt / (out_size / 2)
    perspective = np.array([[1, 0, 0], [0, 1, 0], [k * math.cos(phi), k * math.sin(phi), 1]])
    to_frame = np.array([[1, 0, out_size / 2], [0, 1, out_size / 2], [0, 0, 1]])
    return to_frame @ perspective @ rotate_scale @ centre_display


def sensor_samples_on_display(
    homography: np.ndarray, out_size: int, supersample: int
) -> tuple[np.ndarray, np.ndarray]:
    """Display coords (u, v) seen by each of supersample² sub-samples of every sensor pixel."""
    n = out_size * supersample
    centres = (np.arange(n, dtype=np.float64) + 0.5) / supersample
    xs, ys = np.meshgrid(centres, centres)
    inverse = np.linalg.inv(homography)
    points = inverse @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    u = (points[0] / points[2]).reshape(n, n)
    v = (points[1] / points[2]).reshape(n, n)
    return u.astype(np.float32), v.astype(np.float32)


def lens_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian defocus blur; sigma in pixels of `image`'s own grid."""
    if sigma_px <= 0:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma_px, sigmaY=sigma_px, borderType=cv2.BORDER_REFLECT)
