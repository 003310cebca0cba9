"""Compose display, optics, sensor and ISP into one photographed-screen capture and its clean twin."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from pipeline.config import SynthesizeParams
from pipeline.moire.display import decode_display_gamma, emitted_light
from pipeline.moire.isp import demosaic, jpeg_roundtrip, to_uint8, tone_curve
from pipeline.moire.optics import camera_homography, lens_blur, screen_margin, sensor_samples_on_display
from pipeline.moire.sensor import add_sensor_noise, bayer_mosaic, integrate_pixel_area


@dataclass(frozen=True)
class CaptureParams:
    """Every sampled parameter of one capture; recorded per pair in the manifest."""

    subpixel_layout: str
    fill_factor: float
    display_gamma: float
    pitch_ratio: float
    rotation_deg: float
    tilt: float
    tilt_direction_deg: float
    blur_sigma: float
    sensor_aperture: float
    shot_noise: float
    read_noise: float
    jpeg_quality: int
    display_size: int
    crop_x: int
    crop_y: int
    crop_side: int

    def as_record(self) -> dict[str, float | int | str]:
        """Flat dict for the manifest."""
        return asdict(self)


def sample_capture_params(
    cfg: SynthesizeParams, source_shape: tuple[int, int], rng: np.random.Generator
) -> CaptureParams:
    """Draw one capture's parameters from the ranges in `cfg` for a source of `source_shape`."""

    def uniform(bounds: tuple[float, float]) -> float:
        return float(rng.uniform(bounds[0], bounds[1]))

    pitch_ratio = uniform(cfg.optics.pitch_ratio)
    rotation = uniform(cfg.optics.rotation_deg)
    tilt = uniform(cfg.optics.tilt)
    display_size = math.ceil(cfg.size * screen_margin(rotation, tilt) / pitch_ratio) + 2
    # Show the source near its native scale (0.8–2× downscale) so screen content stays crisp.
    height, width = source_shape
    crop_side = int(min(min(height, width), round(display_size * rng.uniform(0.8, 2.0))))
    return CaptureParams(
        subpixel_layout=cfg.display.subpixel_layout,
        fill_factor=uniform(cfg.display.fill_factor),
        display_gamma=cfg.display.gamma,
        pitch_ratio=pitch_ratio,
        rotation_deg=rotation,
        tilt=tilt,
        tilt_direction_deg=uniform((0.0, 360.0)),
        blur_sigma=uniform(cfg.optics.blur_sigma),
        sensor_aperture=uniform(cfg.sensor.aperture),
        shot_noise=uniform(cfg.sensor.shot_noise),
        read_noise=uniform(cfg.sensor.read_noise),
        jpeg_quality=int(round(uniform(cfg.isp.jpeg_quality))),
        display_size=display_size,
        crop_x=int(rng.integers(0, width - crop_side + 1)),
        crop_y=int(rng.integers(0, height - crop_side + 1)),
        crop_side=crop_side,
    )


def screen_content(source: np.ndarray, capture: CaptureParams) -> np.ndarray:
    """The crop of `source` shown full-screen at the display's resolution."""
    crop = source[capture.crop_y : capture.crop_y + capture.crop_side,
                  capture.crop_x : capture.crop_x + capture.crop_side]
    n = capture.display_size
    interpolation = cv2.INTER_AREA if capture.crop_side >= n else cv2.INTER_CUBIC
    return cv2.resize(crop, (n, n), interpolation=interpolation)


def simulate_capture(
    source: np.ndarray, capture: CaptureParams, out_size: int, supersample: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Photograph `source` on a screen: return pixel-aligned (moiré, clean) RGB uint8 images.

    The clean image is the same content through the same geometry and tone curve, without the
    subpixel structure, blur, CFA, noise or JPEG.
    """
    linear = decode_display_gamma(screen_content(source, capture), capture.display_gamma)
    homography = camera_homography(
        capture.display_size, out_size, capture.pitch_ratio, capture.rotation_deg,
        capture.tilt, capture.tilt_direction_deg,
    )
    u, v = sensor_samples_on_display(homography, out_size, supersample)
    footprint = 1.0 / (capture.pitch_ratio * supersample)

    light = emitted_light(linear, u, v, footprint, capture.subpixel_layout, capture.fill_factor)
    light = lens_blur(light, capture.blur_sigma * supersample)
    raw = add_sensor_noise(
        bayer_mosaic(integrate_pixel_area(light, supersample, capture.sensor_aperture)), capture.shot_noise, capture.read_noise, rng
    )
    moire = jpeg_roundtrip(to_uint8(tone_curve(demosaic(raw), capture.display_gamma)), capture.jpeg_quality)

    # Bilinear over display pixel centres (cv2 puts pixel i's centre at i, ours at i + 0.5).
    clean_samples = cv2.remap(linear, u - 0.5, v - 0.5, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    clean = to_uint8(tone_curve(integrate_pixel_area(clean_samples, supersample), capture.display_gamma))
    return moire, clean
