"""Screen falloff: the light a photo of a screen loses towards its edges, estimated from the photo and undone.

Why: an LCD's luminance falls with the viewing angle, and a phone held close enough for the screen to fill the
frame sees its corners 30–40° off axis; the phone's lens shading correction flattens a Lambertian scene, not a
screen. So photos of screens are darker towards the edges than the digital original they are scored against:
all 11 real pairs of ../shared/real-moire/paired and all six UHDM 4K photos show it, and a per-image fit of that
field is the largest part of the real pairs' tone-aligned error that any per-image fit explains
(docs/benchmarks.md, "What is left: light that fades towards the corners"). A network restoring tiles cannot see
where the frame's centre is, so the field is estimated on the whole photo and undone outside the network.

The field: log F = a·(x² + y²) + b·x + c·y over coordinates centred on the photo and divided by its
half-diagonal — a bowl whose centre may lie anywhere (a crop of a larger frame) — with a ≤ 0 (light only falls
away from the axis; a photo brighter towards its edges is content). It is fitted to the gradients of the log
of the photo's linear luma, shrunk to ESTIMATE_SIDE pixels, where those gradients are small: in flat areas the
content has none and the falloff's remains, while content edges are left out. Content whose own brightness
varies smoothly (a sky, a vignetted photograph on the screen) is taken for falloff in part, which is why only
a share of the field is undone by default (`infer.falloff`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The estimate's scale: coarse enough to average moiré bands and noise away, fine enough for a smooth field.
ESTIMATE_SIDE = 128
BLUR_SIGMA = 1.0  # px at ESTIMATE_SIDE, on the log luma before its gradient
# Flat areas: log-luma gradient below this per pixel at ESTIMATE_SIDE (a 2 % change from one pixel to the next).
# A strong falloff (a = −0.6) changes log luma by at most 0.016 per pixel there (in the corners); edges by far more.
FLAT_GRADIENT = 0.02
# Linear luma outside these is too dark (noise dominates its log) or clipped (its gradient says nothing).
DARKEST, BRIGHTEST = 0.02, 0.95
MIN_FLAT_PIXELS = 50
ROBUST_ROUNDS = 3  # reweighted least squares: gradients far off the fit (content) count less each round
LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # BT.709, linear light


@dataclass(frozen=True)
class FalloffField:
    """log F = curvature·(x² + y²) + tilt_x·x + tilt_y·y, coordinates in half-diagonals from the centre."""

    curvature: float = 0.0
    tilt_x: float = 0.0
    tilt_y: float = 0.0

    def log_light(self, height: int, width: int) -> np.ndarray:
        """log F over an H×W image (float32)."""
        x, y = (axis.astype(np.float32) for axis in _normalised_coordinates(height, width))
        return (self.curvature * x * x + self.tilt_x * x) + (self.curvature * y * y + self.tilt_y * y)


def _srgb_to_linear_table() -> np.ndarray:
    """Linear light of each of the 256 sRGB code values."""
    code = np.arange(256, dtype=np.float64) / 255
    return np.where(code <= 0.04045, code / 12.92, ((code + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _linear_to_srgb_table(levels: int = 65_536) -> np.ndarray:
    """sRGB code values (uint8) of `levels` evenly spaced linear values from 0 to 1: finer than one code anywhere."""
    linear = np.linspace(0.0, 1.0, levels)
    encoded = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.rint(encoded * 255).astype(np.uint8)


TO_LINEAR, TO_SRGB = _srgb_to_linear_table(), _linear_to_srgb_table()


def _to_srgb(linear: np.ndarray) -> np.ndarray:
    """sRGB code values (uint8) of linear light (clipped to [0, 1]), through TO_SRGB (5× faster than the power);
    `linear` (float) is used as scratch space."""
    index = np.clip(linear, 0.0, 1.0, out=linear)
    index *= len(TO_SRGB) - 1
    return TO_SRGB[np.rint(index, out=index).astype(np.int32)]


def _normalised_coordinates(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """x (1×W) and y (H×1), centred on the image, in units of its half-diagonal."""
    half_diagonal = np.hypot(height, width) / 2
    x = (np.arange(width, dtype=np.float64) - (width - 1) / 2) / half_diagonal
    y = (np.arange(height, dtype=np.float64) - (height - 1) / 2) / half_diagonal
    return x[None, :], y[:, None]


def linear_luma(image: np.ndarray) -> np.ndarray:
    """H×W linear luma (float32) of an H×W×3 uint8 sRGB image, one channel at a time (no H×W×3 float copy)."""
    luma = TO_LINEAR[image[..., 0]] * LUMA_WEIGHTS[0]
    luma += TO_LINEAR[image[..., 1]] * LUMA_WEIGHTS[1]
    luma += TO_LINEAR[image[..., 2]] * LUMA_WEIGHTS[2]
    return luma


def estimate_falloff(image: np.ndarray) -> FalloffField:
    """The falloff field of an H×W×3 uint8 photo, fitted to its flat areas' log-luma gradients (module docstring)."""
    import cv2  # imported here: the library's other inference paths do not need OpenCV

    height, width = image.shape[:2]
    scale = ESTIMATE_SIDE / max(height, width)
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    small = cv2.resize(linear_luma(image), size, interpolation=cv2.INTER_AREA).astype(np.float64)
    log_luma = cv2.GaussianBlur(np.log(np.clip(small, 1e-4, None)), (0, 0), BLUR_SIGMA)
    grad_y, grad_x = np.gradient(log_luma)
    flat = (small > DARKEST) & (small < BRIGHTEST) & (np.hypot(grad_x, grad_y) < FLAT_GRADIENT)
    flat[:2], flat[-2:], flat[:, :2], flat[:, -2:] = False, False, False, False  # the blur saw the border there
    if flat.sum() < MIN_FLAT_PIXELS:
        return FalloffField()
    x, y = _normalised_coordinates(*small.shape)
    half_diagonal = np.hypot(*small.shape) / 2
    xs, ys = np.broadcast_to(x, small.shape)[flat], np.broadcast_to(y, small.shape)[flat]
    # d(log F)/dx = 2a·x + b and d(log F)/dy = 2a·y + c, per half-diagonal: linear in (a, b, c)
    design = np.concatenate([np.stack([2 * xs, np.ones_like(xs), np.zeros_like(xs)], 1),
                             np.stack([2 * ys, np.zeros_like(ys), np.ones_like(ys)], 1)])
    observed = np.concatenate([grad_x[flat], grad_y[flat]]) * half_diagonal
    params = _robust_least_squares(design, observed)
    return FalloffField(curvature=min(float(params[0]), 0.0), tilt_x=float(params[1]), tilt_y=float(params[2]))


def _robust_least_squares(design: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Least squares reweighted ROBUST_ROUNDS times (Huber weights on each pixel's x and y residual together)."""
    pixels = len(observed) // 2
    weights = np.ones(pixels)
    for _ in range(ROBUST_ROUNDS):
        root = np.sqrt(np.concatenate([weights, weights]))
        params, *_ = np.linalg.lstsq(design * root[:, None], observed * root, rcond=None)
        residual = np.hypot(*(design @ params - observed).reshape(2, pixels))
        spread = 1.4826 * np.median(residual) + 1e-9
        weights = 1 / np.maximum(1.0, residual / (2 * spread))
    return params


def undo_falloff(image: np.ndarray, field: FalloffField, strength: float) -> np.ndarray:
    """`image` (H×W×3 uint8) with `strength` (0–1) of `field` divided out in linear light, its mean luma kept."""
    if strength == 0 or field == FalloffField():
        return image
    gain = np.exp(-strength * field.log_light(*image.shape[:2]))
    luma = linear_luma(image)
    gain *= np.float32(luma.mean() / max(float((luma * gain).mean()), 1e-12))  # the photo's exposure stays
    out = np.empty_like(image)
    for channel in range(3):  # one float plane at a time: a 4K photo's float copy would be 150 MB
        out[..., channel] = _to_srgb(TO_LINEAR[image[..., channel]] * gain)
    return out


def correct_falloff(restored: np.ndarray, photo: np.ndarray, strength: float) -> np.ndarray:
    """`restored` with `strength` of the falloff estimated on `photo` (its input) undone; unchanged at 0."""
    if strength == 0:
        return restored
    return undo_falloff(restored, estimate_falloff(photo), strength)
