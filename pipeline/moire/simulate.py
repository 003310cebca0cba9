"""Compose display, optics, sensor and ISP into photographed-screen captures and their clean twins.

One implementation serves both uses: `simulate_capture` renders one pair for a dataset on disk,
and `simulate_batch` renders a batch of captures with different parameters on CPU or CUDA, which
is what on-the-fly synthesis during training uses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import get_type_hints

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import SynthesizeParams
from pipeline.moire.display import add_glare, decode_display_gamma, emitted_light, panel_colour, subpixel_coverage
from pipeline.moire.isp import demosaic, sharpen, to_uint8, tone_curve, white_balance
from pipeline.moire.jpeg import jpeg_compress
from pipeline.moire.optics import (
    camera_homography, lens_blur, pitch_ratio, screen_margin, sensor_samples_on_display, vignetting,
)
from pipeline.moire.sensor import add_sensor_noise, bayer_mosaic, expose, integrate_pixel_area

# Source images are sRGB-like; the clean target is averaged over pixel areas in linear light.
SOURCE_GAMMA = 2.2


@dataclass(frozen=True)
class CaptureParams:
    """Every sampled parameter of one capture; recorded per pair in the manifest."""

    subpixel_layout: str
    fill_factor: float
    display_gamma: float
    gamut: float
    white_point_r: float
    white_point_b: float
    brightness: float
    black_level: float
    display_pitch_mm: float
    distance_mm: float
    focal_length_mm: float
    sensor_pitch_um: float
    pitch_ratio: float
    rotation_deg: float
    tilt: float
    tilt_direction_deg: float
    radial_distortion: float
    blur_sigma: float
    vignetting: float
    sensor_aperture: float
    exposure_ev: float
    shot_noise: float
    read_noise: float
    wb_gain_r: float
    wb_gain_b: float
    camera_gamma: float
    sharpen: float
    jpeg_quality: int
    display_size: int
    crop_x: int
    crop_y: int
    crop_side: int
    noise_seed: int

    def as_record(self) -> dict[str, float | int | str]:
        """Flat dict for the manifest."""
        return asdict(self)


def pitch_ratio_bounds(cfg: SynthesizeParams) -> tuple[float, float]:
    """Smallest and largest pitch ratio the configured display, distance, lens and sensor allow."""
    display, optics, sensor = cfg.display, cfg.optics, cfg.sensor
    low = pitch_ratio(display.pixel_pitch_mm[0], optics.distance_mm[1], optics.focal_length_mm[0], sensor.pixel_pitch_um[1])
    high = pitch_ratio(display.pixel_pitch_mm[1], optics.distance_mm[0], optics.focal_length_mm[1], sensor.pixel_pitch_um[0])
    return low, high


def display_size(cfg: SynthesizeParams) -> int:
    """Display resolution (pixels per side) that covers the frame for every pose the ranges allow.

    Fixed per configuration, so every capture of a batch shares one content size; captures with a
    larger pitch ratio simply see the central part of the screen, as a closer camera would.
    """
    optics = cfg.optics
    worst_rotation = max(abs(optics.rotation_deg[0]), abs(optics.rotation_deg[1]), 0.0)
    margin = screen_margin(min(worst_rotation, 45.0), optics.tilt[1], optics.radial_distortion[1])
    return math.ceil(cfg.size * margin / pitch_ratio_bounds(cfg)[0]) + 2


def sample_capture_params(
    cfg: SynthesizeParams, source_shape: tuple[int, int], rng: np.random.Generator
) -> CaptureParams:
    """Draw one capture's parameters from the ranges in `cfg` for a source of `source_shape`."""

    def uniform(bounds: tuple[float, float]) -> float:
        return float(rng.uniform(bounds[0], bounds[1]))

    display, optics, sensor, isp = cfg.display, cfg.optics, cfg.sensor, cfg.isp
    pitches = dict(
        display_pitch_mm=uniform(display.pixel_pitch_mm), distance_mm=uniform(optics.distance_mm),
        focal_length_mm=uniform(optics.focal_length_mm), sensor_pitch_um=uniform(sensor.pixel_pitch_um),
    )
    n = display_size(cfg)
    # Show the source near its native scale (0.8–2× downscale) so screen content stays crisp.
    height, width = source_shape
    crop_side = int(min(height, width, round(n * rng.uniform(0.8, 2.0))))
    return CaptureParams(
        subpixel_layout=str(display.subpixel_layouts[int(rng.integers(len(display.subpixel_layouts)))]),
        fill_factor=uniform(display.fill_factor),
        display_gamma=uniform(display.gamma),
        gamut=uniform(display.gamut),
        white_point_r=1.0 + uniform(display.white_point),
        white_point_b=1.0 + uniform(display.white_point),
        brightness=uniform(display.brightness),
        black_level=uniform(display.black_level),
        **pitches,
        pitch_ratio=pitch_ratio(**pitches),
        rotation_deg=uniform(optics.rotation_deg),
        tilt=uniform(optics.tilt),
        tilt_direction_deg=uniform((0.0, 360.0)),
        radial_distortion=uniform(optics.radial_distortion),
        blur_sigma=uniform(optics.blur_sigma),
        vignetting=uniform(optics.vignetting),
        sensor_aperture=uniform(sensor.aperture),
        exposure_ev=uniform(sensor.exposure_ev),
        shot_noise=uniform(sensor.shot_noise),
        read_noise=uniform(sensor.read_noise),
        wb_gain_r=1.0 + uniform(isp.white_balance),
        wb_gain_b=1.0 + uniform(isp.white_balance),
        camera_gamma=uniform(isp.gamma),
        sharpen=uniform(isp.sharpen),
        jpeg_quality=int(round(uniform(isp.jpeg_quality))),
        display_size=n,
        crop_x=int(rng.integers(0, width - crop_side + 1)),
        crop_y=int(rng.integers(0, height - crop_side + 1)),
        crop_side=crop_side,
        noise_seed=int(rng.integers(0, 2**62)),
    )


def screen_content(source: np.ndarray, capture: CaptureParams) -> np.ndarray:
    """The crop of `source` shown full-screen at the display's resolution (uint8 HxWx3)."""
    crop = source[capture.crop_y : capture.crop_y + capture.crop_side,
                  capture.crop_x : capture.crop_x + capture.crop_side]
    n = capture.display_size
    interpolation = cv2.INTER_AREA if capture.crop_side >= n else cv2.INTER_CUBIC
    return cv2.resize(crop, (n, n), interpolation=interpolation)


# Numeric parameters the batched simulator reads as (B,) tensors.
_TENSOR_FIELDS = tuple(
    name for name, kind in get_type_hints(CaptureParams).items() if kind in (float, int) and name != "noise_seed"
)


def capture_tensors(captures: list[CaptureParams], device: torch.device) -> dict[str, torch.Tensor]:
    """Each numeric capture parameter as a (B,) float32 tensor on `device`."""
    return {
        name: torch.tensor([getattr(c, name) for c in captures], dtype=torch.float32, device=device)
        for name in _TENSOR_FIELDS
    }


def content_batch(sources: list[np.ndarray], captures: list[CaptureParams]) -> torch.Tensor:
    """(B, 3, N, N) uint8 screen contents of each (source, capture), ready for `simulate_batch`."""
    return torch.stack([
        torch.from_numpy(screen_content(source, capture)).permute(2, 0, 1)
        for source, capture in zip(sources, captures)
    ])


def _layout_coverage(
    u: torch.Tensor, v: torch.Tensor, footprint: torch.Tensor, fill: torch.Tensor, layouts: list[str]
) -> torch.Tensor:
    """Subpixel coverage for a batch whose captures may use different layouts."""
    coverage = torch.empty((u.shape[0], 3, *u.shape[1:]), dtype=u.dtype, device=u.device)
    for layout in sorted(set(layouts)):
        rows = torch.tensor([i for i, name in enumerate(layouts) if name == layout], device=u.device)
        coverage[rows] = subpixel_coverage(u[rows], v[rows], footprint[rows], layout, fill[rows])
    return coverage


def _homographies(captures: list[CaptureParams], out_size: int, device: torch.device) -> torch.Tensor:
    """(B, 3, 3) display → sensor maps of each capture."""
    maps = [
        camera_homography(c.display_size, out_size, c.pitch_ratio, c.rotation_deg, c.tilt, c.tilt_direction_deg)
        for c in captures
    ]
    return torch.tensor(np.stack(maps), dtype=torch.float64, device=device)


def simulate_batch(
    content: torch.Tensor, captures: list[CaptureParams], out_size: int, supersample: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Photograph a batch of screens: (B, 3, N, N) uint8 content → (moiré, clean) in [0, 1], (B, 3, S, S).

    Each capture's result depends only on its own content and parameters (noise included, drawn
    from its `noise_seed`), not on the rest of the batch. The clean image is the same content
    through the same pose and lens distortion, averaged over each whole pixel, with none of the
    display's or camera's colour, structure, blur, noise or compression: what a screenshot warped
    onto the photo would look like.
    """
    p = capture_tensors(captures, content.device)
    ones = torch.ones_like(p["gamut"])
    homographies = _homographies(captures, out_size, content.device)
    u, v = sensor_samples_on_display(homographies, out_size, supersample, p["radial_distortion"], p["sensor_aperture"])

    white_point = torch.stack([p["white_point_r"], ones, p["white_point_b"]], dim=1)
    panel = panel_colour(decode_display_gamma(content, p["display_gamma"]), p["gamut"], white_point, p["brightness"])
    footprint = p["sensor_aperture"] / (p["pitch_ratio"] * supersample)
    coverage = _layout_coverage(u, v, footprint, p["fill_factor"], [c.subpixel_layout for c in captures])
    light = add_glare(emitted_light(panel, u, v, coverage), p["black_level"])
    light = lens_blur(light * vignetting(out_size, supersample, p["vignetting"]), p["blur_sigma"] * supersample)
    irradiance = expose(integrate_pixel_area(light, supersample), p["exposure_ev"])
    raw = add_sensor_noise(bayer_mosaic(irradiance), p["shot_noise"], p["read_noise"], [c.noise_seed for c in captures])
    gains = torch.stack([p["wb_gain_r"], ones, p["wb_gain_b"]], dim=1)
    encoded = sharpen(tone_curve(white_balance(demosaic(raw), gains), p["camera_gamma"]), p["sharpen"])
    moire = jpeg_compress(encoded, p["jpeg_quality"])

    whole_u, whole_v = sensor_samples_on_display(homographies, out_size, supersample, p["radial_distortion"], ones)
    source_gamma = torch.full_like(ones, SOURCE_GAMMA)
    n = content.shape[-1]
    # grid_sample (align_corners=False) reads pixel i's centre at i + 0.5, as our coordinates do.
    grid = torch.stack([2.0 * whole_u / n - 1.0, 2.0 * whole_v / n - 1.0], dim=-1)
    warped = F.grid_sample(decode_display_gamma(content, source_gamma), grid, mode="bilinear",
                           padding_mode="border", align_corners=False)
    clean = tone_curve(integrate_pixel_area(warped, supersample), source_gamma)
    return moire, clean


def simulate_capture(
    source: np.ndarray, capture: CaptureParams, out_size: int, supersample: int
) -> tuple[np.ndarray, np.ndarray]:
    """Photograph `source` on a screen: pixel-aligned (moiré, clean) RGB uint8 images (HxWx3)."""
    moire, clean = simulate_batch(content_batch([source], [capture]), [capture], out_size, supersample)
    return tuple(to_uint8(image[0]).permute(1, 2, 0).numpy() for image in (moire, clean))
