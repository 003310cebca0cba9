"""Compose display, optics, sensor and ISP into photographed-screen captures and their clean twins.

One implementation serves both uses: `simulate_capture` renders one pair for a dataset on disk,
and `simulate_batch` renders a batch of captures with different parameters on CPU or CUDA, which
is what on-the-fly synthesis during training uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, get_type_hints

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import SynthesizeParams
from pipeline.moire.display import (
    add_glare, decode_display_gamma, emitted_light, fused_subpixel_coverage, panel_colour, white_screen_light,
)
from pipeline.moire.isp import (
    colour_matrix, demosaic_each, denoise_chroma, sharpen, shrink_denoised, shrink_to, subtract_black_point, to_uint8,
    tone_curve, white_balance,
)
from pipeline.moire.jpeg import camera_jpeg
from pipeline.moire.patterns import BandPattern, band_modulation, sample_band_pattern
from pipeline.moire.portable import portable
from pipeline.moire.optics import (
    blurred_mosaic, camera_homography, focus_weight, lens_blur, pitch_ratio, screen_margin, sensor_samples_on_display,
    vignetting,
)
from pipeline.moire.sensor import (
    add_sensor_noise, bayer_mosaic, integrate_pixel_area, metered_gain, mix_crosstalk,
)

if TYPE_CHECKING:  # layer_bank builds on this module
    from pipeline.moire.layer_bank import LayerBank

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
    pitch_ratio: float  # display pixel pitch in camera pixels
    downscale: float  # camera pixels per output pixel along each side
    beat_period_px: float  # the period the grids were made to beat at (NaN: not directed)
    rotation_deg: float
    tilt: float
    tilt_direction_deg: float
    radial_distortion: float
    blur_sigma: float
    vignetting: float
    sensor_aperture: float
    exposure_ev: float
    auto_exposure: bool
    shot_noise: float
    read_noise: float
    wb_gain_r: float
    wb_gain_b: float
    black_point: float
    chroma_denoise: float
    output_blur: float
    camera_gamma: float
    sharpen: float
    jpeg_quality: int
    display_size: int
    crop_x: int
    crop_y: int
    crop_side: int
    noise_seed: int
    target_tone_of_capture: bool = False  # the clean target is the camera's rendering without moiré
    target_detail_of_capture: bool = False  # the clean target carries the photo's blur and sharpening
    moire_layer: bool = False  # the moiré of a white screen laid over the content's light
    moire_contrast: float = math.nan  # the layer's RMS contrast is set to this; NaN keeps the physics' own
    defocus_spread: float = 0.0  # extra lens blur (camera px) a half-frame or more from the focus line
    focus_position: float = 0.0  # where the focus line crosses the tilt direction, in half-frames from the centre
    demosaic: str | None = None  # the ISP's demosaic (isp.demosaic); None: bilinear, not drawn
    moire_free: bool | None = None  # photographed without moiré (synthesize.moire_free_fraction); None: not drawn
    crosstalk: float = math.nan  # share of the other primaries each colour filter passes (sensor.crosstalk); NaN: none
    pattern: BandPattern | None = None  # a drawn band pattern replaces the physical moiré
    layer_slot: int | None = None  # the layer bank's slot whose layer (and geometry) this capture takes
    layer_orientation: int | None = None  # that layer's quarter turns, mirrored when ≥ 4 (layer_bank.orient)

    def as_record(self) -> dict[str, float | int | str]:
        """Flat dict for the manifest (the pattern's fields prefixed `pattern_`, absent ones NaN; the layer
        bank's, the defocus's and the demosaic's columns only when in use, so a dataset without them keeps its
        manifest)."""
        record = asdict(self)
        for name in ("layer_slot", "layer_orientation"):
            if record[name] is None:
                del record[name]
        if self.defocus_spread == 0.0 and self.focus_position == 0.0:  # optics.defocus_spread not set
            del record["defocus_spread"], record["focus_position"]
        if self.demosaic is None:  # isp.demosaic not set
            del record["demosaic"]
        if self.moire_free is None:  # synthesize.moire_free_fraction not set
            del record["moire_free"]
        if math.isnan(self.crosstalk):  # sensor.crosstalk not set
            del record["crosstalk"]
        pattern = record.pop("pattern")
        record["generator"] = "screen" if pattern is None else "bands"
        for name in BandPattern.__dataclass_fields__:
            record[f"pattern_{name}"] = float("nan") if pattern is None else float(pattern[name])
        return record


def pitch_ratio_bounds(cfg: SynthesizeParams) -> tuple[float, float]:
    """Smallest and largest pitch ratio the configured display, distance, lens and sensor allow.

    Beat-directed captures (optics.beat_period_px) take their pitch from the beat instead: within a
    beat frequency of the nearest resonance (order / 2 cycles per camera pixel).
    """
    display, optics, sensor = cfg.display, cfg.optics, cfg.sensor
    if optics.beat_period_px is not None:
        beat = 1.0 / optics.beat_period_px[0]  # the camera period is at least the output period
        return 2.0 / (max(optics.resonance_orders) + 2 * beat), 2.0 / max(min(optics.resonance_orders) - 2 * beat, 1e-3)
    low = pitch_ratio(display.pixel_pitch_mm[0], optics.distance_mm[1], optics.focal_length_mm[0], sensor.pixel_pitch_um[1])
    high = pitch_ratio(display.pixel_pitch_mm[1], optics.distance_mm[0], optics.focal_length_mm[1], sensor.pixel_pitch_um[0])
    return low, high


def sensor_side(out_size: int, downscale: float) -> int:
    """Side of the camera's frame, in camera pixels, that shrinks to `out_size` (even, for the Bayer tile)."""
    return max(out_size, 2 * round(out_size * downscale / 2))


def camera_downscale(pitch: float, output_pitch: float, max_downscale: float) -> float:
    """How much the camera's frame shrinks so a display pixel spans `output_pitch` output pixels (1 to max)."""
    return min(max(pitch / output_pitch, 1.0), max_downscale)


def beating_pitch(order: int, period_camera_px: float, angle_deg: float) -> tuple[float, float]:
    """(display pitch in camera pixels, rotation in degrees) that make the screen grid beat with period
    `period_camera_px` against the camera's sampling lattice near its point (order / 2, 0).

    The grid's frequency vector is that lattice point plus the beat's; its length is 1 / pitch and
    its direction the screen's rotation (the sampling lattice of the Bayer mosaic's red and blue
    has points every 1/2 cycle per pixel, the full grid every 1).
    """
    theta = math.radians(angle_deg)
    fx = order / 2 + math.cos(theta) / period_camera_px
    fy = math.sin(theta) / period_camera_px
    return 1.0 / math.hypot(fx, fy), math.degrees(math.atan2(fy, fx))


def distance_for_pitch(pitch: float, display_pitch_mm: float, focal_length_mm: float, sensor_pitch_um: float) -> float:
    """The camera distance (mm) at which the thin lens images the display pitch onto `pitch` camera pixels."""
    return focal_length_mm + display_pitch_mm * focal_length_mm / (pitch * sensor_pitch_um / 1000.0)


def visible_display_side(frame_size: int, pitch: float, rotation_deg: float, tilt: float, radial_distortion: float) -> int:
    """Display pixels per side that cover a camera frame of `frame_size` at this pose, with margin."""
    margin = screen_margin(min(abs(rotation_deg), 45.0), tilt, radial_distortion)
    return math.ceil(frame_size * margin / pitch) + 2


def display_size(cfg: SynthesizeParams) -> int:
    """The largest display side any capture of these ranges needs (its `display_size` is at most this)."""
    optics = cfg.optics
    worst_rotation = max(abs(optics.rotation_deg[0]), abs(optics.rotation_deg[1]), 0.0)
    largest = cfg.sensor.max_downscale if cfg.sensor.output_pitch is not None else 1.0
    return visible_display_side(sensor_side(cfg.size, largest), pitch_ratio_bounds(cfg)[0],
                                worst_rotation, optics.tilt[1], optics.radial_distortion[1])


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
    pose = dict(rotation_deg=uniform(optics.rotation_deg), tilt=uniform(optics.tilt),
                tilt_direction_deg=uniform((0.0, 360.0)), radial_distortion=uniform(optics.radial_distortion))
    output_pitch = uniform(sensor.output_pitch) if sensor.output_pitch else None
    beat_period = math.nan
    if optics.beat_period_px is not None:
        order = int(optics.resonance_orders[int(rng.integers(len(optics.resonance_orders)))])
        beat_period = float(math.exp(rng.uniform(*np.log(optics.beat_period_px))))
        near = camera_downscale(2.0 / order, output_pitch, sensor.max_downscale) if output_pitch else 1.0
        pitch, pose["rotation_deg"] = beating_pitch(order, beat_period * near, uniform((0.0, 360.0)))
        pitches["distance_mm"] = distance_for_pitch(pitch, **{k: v for k, v in pitches.items() if k != "distance_mm"})
    pitch = pitch_ratio(**pitches)
    downscale = camera_downscale(pitch, output_pitch, sensor.max_downscale) if output_pitch else 1.0
    # Only the part of the screen the frame sees is rendered; sources are shown at `display.content_scale`
    # source pixels per display pixel (by default 0.8–2: near their native scale, so content stays crisp).
    n = visible_display_side(sensor_side(cfg.size, downscale), pitch, pose["rotation_deg"], pose["tilt"],
                             pose["radial_distortion"])
    height, width = source_shape
    crop_side = int(min(height, width, round(n * uniform(display.content_scale))))
    capture = CaptureParams(
        subpixel_layout=str(display.subpixel_layouts[int(rng.integers(len(display.subpixel_layouts)))]),
        fill_factor=uniform(display.fill_factor),
        display_gamma=uniform(display.gamma),
        gamut=uniform(display.gamut),
        white_point_r=1.0 + uniform(display.white_point),
        white_point_b=1.0 + uniform(display.white_point),
        brightness=uniform(display.brightness),
        black_level=uniform(display.black_level),
        **pitches,
        pitch_ratio=pitch,
        downscale=downscale,
        beat_period_px=beat_period,
        **pose,
        blur_sigma=uniform(optics.blur_sigma),
        vignetting=uniform(optics.vignetting),
        sensor_aperture=uniform(sensor.aperture),
        exposure_ev=uniform(sensor.exposure_ev),
        auto_exposure=sensor.auto_exposure,
        shot_noise=uniform(sensor.shot_noise),
        read_noise=uniform(sensor.read_noise),
        wb_gain_r=1.0 + uniform(isp.white_balance),
        wb_gain_b=1.0 + uniform(isp.white_balance),
        black_point=uniform(isp.black_point),
        chroma_denoise=uniform(isp.chroma_denoise),
        output_blur=uniform(isp.output_blur),
        camera_gamma=uniform(isp.gamma),
        sharpen=uniform(isp.sharpen),
        jpeg_quality=int(round(uniform(isp.jpeg_quality))),
        display_size=n,
        crop_x=int(rng.integers(0, width - crop_side + 1)),
        crop_y=int(rng.integers(0, height - crop_side + 1)),
        crop_side=crop_side,
        noise_seed=int(rng.integers(0, 2**62)),
        target_tone_of_capture=cfg.target_tone == "capture",
        target_detail_of_capture=cfg.target_detail == "capture",
        moire_layer=cfg.moire_model == "layer",
        pattern=(sample_band_pattern(rng, cfg.patterns.period_px, cfg.patterns.amplitude)
                 if cfg.patterns.fraction > 0 and rng.random() < cfg.patterns.fraction else None),
        # drawn last and only when set, so every other draw is that of a config without it
        moire_contrast=uniform(optics.moire_contrast) if optics.moire_contrast is not None else math.nan,
        **(dict(defocus_spread=uniform(optics.defocus_spread), focus_position=uniform((-1.0, 1.0)))
           if optics.defocus_spread is not None else {}),
        **({"demosaic": str(isp.demosaic[int(rng.integers(len(isp.demosaic)))])} if isp.demosaic is not None else {}),
        **({"crosstalk": uniform(sensor.crosstalk)} if sensor.crosstalk is not None else {}),
    )
    if cfg.moire_free_fraction > 0:  # drawn after every other draw, so they stay a config's without it
        free = bool(rng.random() < cfg.moire_free_fraction)
        capture = replace(capture, moire_free=free, pattern=None if free else capture.pattern)
    return capture


def screen_content(source: np.ndarray, capture: CaptureParams) -> np.ndarray:
    """The crop of `source` shown on the display's visible part, at the display's resolution (uint8 HxWx3)."""
    crop = source[capture.crop_y : capture.crop_y + capture.crop_side,
                  capture.crop_x : capture.crop_x + capture.crop_side]
    n = capture.display_size
    interpolation = cv2.INTER_AREA if capture.crop_side >= n else cv2.INTER_CUBIC
    return cv2.resize(crop, (n, n), interpolation=interpolation)


def content_offset(capture: CaptureParams, side: int) -> int:
    """Where a capture's screen content starts inside a batch's content of `side` pixels (centred)."""
    return (side - capture.display_size) // 2


# Numeric parameters the batched simulator reads as (B,) tensors.
_TENSOR_FIELDS = tuple(
    name for name, kind in get_type_hints(CaptureParams).items() if kind in (float, int, bool) and name != "noise_seed"
)


def capture_tensors(captures: list[CaptureParams], device: torch.device) -> dict[str, torch.Tensor]:
    """Each numeric capture parameter as a (B,) float32 tensor on `device`."""
    return {
        name: torch.tensor([getattr(c, name) for c in captures], dtype=torch.float32, device=device)
        for name in _TENSOR_FIELDS
    }


def content_batch(sources: list[np.ndarray], captures: list[CaptureParams]) -> torch.Tensor:
    """(B, 3, N, N) uint8 screen contents of each (source, capture), ready for `simulate_batch`.

    N is the largest display side of the batch; smaller ones sit centred in it (`content_offset`),
    edge-padded where no frame of theirs ever looks.
    """
    side = max(capture.display_size for capture in captures)
    contents = []
    for source, capture in zip(sources, captures):
        before = content_offset(capture, side)
        after = side - capture.display_size - before
        padded = np.pad(screen_content(source, capture), ((before, after), (before, after), (0, 0)), mode="edge")
        contents.append(torch.from_numpy(padded).permute(2, 0, 1))
    return torch.stack(contents)


def _layout_coverage(
    u: torch.Tensor, v: torch.Tensor, footprint: torch.Tensor, fill: torch.Tensor, layouts: list[str]
) -> torch.Tensor:
    """Subpixel coverage for a batch whose captures may use different layouts."""
    if len(set(layouts)) == 1:  # one layout (every single capture): no copies in and out of the batch
        return fused_subpixel_coverage(u, v, footprint, layouts[0], fill)
    coverage = torch.empty((u.shape[0], 3, *u.shape[1:]), dtype=u.dtype, device=u.device)
    for layout in sorted(set(layouts)):
        rows = torch.tensor([i for i, name in enumerate(layouts) if name == layout], device=u.device)
        coverage[rows] = fused_subpixel_coverage(u[rows], v[rows], footprint[rows], layout, fill[rows])
    return coverage


def _homographies(captures: list[CaptureParams], content_side: int, frame_size: int, scale: float,
                  device: torch.device) -> torch.Tensor:
    """(B, 3, 3) display → frame maps of each capture; `scale` frame pixels per camera pixel.

    Each capture's screen is centred where `content_batch` put it in content of `content_side` pixels.
    """
    maps = [
        camera_homography(2 * content_offset(c, content_side) + c.display_size, frame_size, c.pitch_ratio * scale,
                          c.rotation_deg, c.tilt, c.tilt_direction_deg)
        for c in captures
    ]
    return torch.tensor(np.stack(maps), dtype=torch.float64, device=device)


def _output_samples(content: torch.Tensor, captures: list[CaptureParams], out_size: int, supersample: int,
                    radial_distortion: torch.Tensor) -> torch.Tensor:
    """grid_sample coordinates of each output sub-sample on the content (whole pixel areas, no aperture)."""
    scales = [out_size / sensor_side(out_size, c.downscale) for c in captures]
    side = content.shape[-1]
    homographies = torch.cat([_homographies([c], side, out_size, scale, content.device) for c, scale in zip(captures, scales)])
    ones = torch.ones(len(captures), device=content.device)
    u, v = sensor_samples_on_display(homographies, out_size, supersample, radial_distortion, ones)
    # grid_sample (align_corners=False) reads pixel i's centre at i + 0.5, as our coordinates do.
    return torch.stack([2.0 * u / side - 1.0, 2.0 * v / side - 1.0], dim=-1)


def _warp(linear: torch.Tensor, grid: torch.Tensor, supersample: int) -> torch.Tensor:
    """Linear light resampled at the output sub-samples and averaged over each output pixel."""
    warped = F.grid_sample(linear, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return integrate_pixel_area(warped, supersample)


def clean_target(content: torch.Tensor, grid: torch.Tensor, supersample: int) -> torch.Tensor:
    """Linear light of the source through the capture's pose and lens, averaged over each whole output pixel.

    None of the display's or camera's colour, structure, blur, noise or compression: what a
    screenshot warped onto the photo would look like.
    """
    gamma = torch.full((content.shape[0],), SOURCE_GAMMA, device=content.device)
    return _warp(decode_display_gamma(content, gamma), grid, supersample)


def screen_colour(content: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Linear light each display pixel emits: the panel's gamma, gamut, white point and brightness."""
    white_point = torch.stack([p["white_point_r"], torch.ones_like(p["gamut"]), p["white_point_b"]], dim=1)
    return panel_colour(decode_display_gamma(content, p["display_gamma"]), p["gamut"], white_point, p["brightness"])


def exposure_gain(irradiance: torch.Tensor, reference: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B,) gain of each capture's exposure: metered against `reference` with auto-exposure, else exposure_ev alone."""
    fixed = torch.exp2(p["exposure_ev"])
    return torch.where(p["auto_exposure"] > 0, metered_gain(irradiance, reference, p["exposure_ev"]), fixed)


def camera_colour(irradiance: torch.Tensor, p: dict[str, torch.Tensor], gain: torch.Tensor) -> torch.Tensor:
    """Irradiance → encoded colour as the camera renders it: exposure `gain`, black point, white balance, tone curve.

    The first three are one affine map per channel, (gain·x − b)·wb / (1 − b), applied in one pass.
    """
    wb = torch.stack([p["wb_gain_r"], torch.ones_like(p["gamut"]), p["wb_gain_b"]], dim=1)
    per_black = wb / (1.0 - p["black_point"]).reshape(-1, 1)
    scale = (gain.reshape(-1, 1) * per_black).reshape(-1, 3, 1, 1)
    offset = (-p["black_point"].reshape(-1, 1) * per_black).reshape(-1, 3, 1, 1)
    return tone_curve(torch.addcmul(offset, irradiance, scale), p["camera_gamma"])


def screen_light(content: torch.Tensor, grid: torch.Tensor, supersample: int, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The light of the screen through the pose and lens, without its subpixel grid: the panel's colour,
    glare and the lens's vignetting, averaged over each output pixel (linear, output resolution).

    Both the moiré-free target and the layered photo start from it, so it is computed once.
    """
    out_size = grid.shape[1] // supersample
    light = add_glare(_warp(screen_colour(content, p), grid, supersample), p["black_level"])
    return light * integrate_pixel_area(vignetting(out_size, supersample, p["vignetting"]), supersample)


def capture_toned_target(light: torch.Tensor, p: dict[str, torch.Tensor], gain: torch.Tensor) -> torch.Tensor:
    """The same photo without moiré: the screen's `screen_light` in the camera's colour at exposure `gain`, none
    of the subpixel grid, blur, noise, mosaic or compression (encoded, output resolution).

    Trained on it, a model learns to remove moiré and leaves colour and tone alone: how a camera
    renders a screen differs from one real set to the next, so what it would learn of it would
    not transfer.
    """
    return camera_colour(light, p, gain)


def photograph(content: torch.Tensor, captures: list[CaptureParams], p: dict[str, torch.Tensor], frame_size: int,
               supersample: int, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The camera's own encoded frame (B, 3, F, F) in [0, 1] and its exposure gain (B,).

    Display, optics, sensor and ISP at camera resolution; `reference` is the clean linear light the
    auto-exposure meters against.
    """
    ones = torch.ones_like(p["gamut"])
    homographies = _homographies(captures, content.shape[-1], frame_size, 1.0, content.device)
    u, v = sensor_samples_on_display(homographies, frame_size, supersample, p["radial_distortion"], p["sensor_aperture"])
    footprint = p["sensor_aperture"] / (p["pitch_ratio"] * supersample)
    coverage = _layout_coverage(u, v, footprint, p["fill_factor"], [c.subpixel_layout for c in captures])
    light = add_glare(emitted_light(screen_colour(content, p), u, v, coverage), p["black_level"])
    light = defocus(lens_blur, light * vignetting(frame_size, supersample, p["vignetting"]), p, frame_size, supersample)
    irradiance = integrate_pixel_area(light, supersample)
    gain = exposure_gain(irradiance, reference, p)
    exposed = irradiance * gain.reshape(-1, 1, 1, 1)
    raw = add_sensor_noise(bayer_mosaic(mix_crosstalk(exposed, p["crosstalk"])), p["shot_noise"], p["read_noise"],
                           [c.noise_seed for c in captures])
    gains = torch.stack([p["wb_gain_r"], ones, p["wb_gain_b"]], dim=1)
    rgb = colour_matrix(demosaic_each(raw, [c.demosaic for c in captures]), p["crosstalk"])
    linear = denoise_chroma(white_balance(subtract_black_point(rgb, p["black_point"]), gains), p["chroma_denoise"])
    encoded = sharpen(tone_curve(linear, p["camera_gamma"]), p["sharpen"])
    return camera_jpeg(encoded, p["jpeg_quality"]), gain


def defocus(blur: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], light: torch.Tensor,
            p: dict[str, torch.Tensor], frame_size: int, supersample: int) -> torch.Tensor:
    """`blur(light, σ)` with each capture's lens blur, grown across the frame by its defocus spread.

    The blur at each point is a blend of the focus line's σ and σ + spread, weighted by the distance
    from that line (`focus_weight`); with no spread it is the one blur.
    """
    sigma = p["blur_sigma"] * supersample
    if float(p["defocus_spread"].max()) <= 0:
        return blur(light, sigma)
    weight = focus_weight(frame_size, supersample, p["focus_position"], p["tilt_direction_deg"])
    sharp, soft = blur(light, sigma), blur(light, sigma + p["defocus_spread"] * supersample)
    return sharp + weight * (soft - sharp)


def moire_layer(captures: list[CaptureParams], p: dict[str, torch.Tensor], content_side: int, frame_size: int,
                out_size: int, supersample: int) -> torch.Tensor:
    """(B, 3, S, S) the moiré a camera makes of a plain white screen: its demosaiced light over its mean, shrunk.

    The screen's grid, the lens, the pixels' apertures, the Bayer mosaic, demosaicing and the ISP's
    chroma smoothing make it; exposure, white balance and the tone curve only scale it, so they
    are left to the content's own rendering.
    """
    homographies = _homographies(captures, content_side, frame_size, 1.0, p["gamut"].device)
    u, v = sensor_samples_on_display(homographies, frame_size, supersample, p["radial_distortion"], p["sensor_aperture"])
    footprint = p["sensor_aperture"] / (p["pitch_ratio"] * supersample)
    coverage = _layout_coverage(u, v, footprint, p["fill_factor"], [c.subpixel_layout for c in captures])
    # The filters' crosstalk mixes the light per pixel, which commutes with the blur: mixed first, blurred once.
    light = mix_crosstalk(white_screen_light(u, v, coverage, content_side), p["crosstalk"])
    if supersample == 1:  # the pixel is one sample: blur only what the mosaic keeps
        raw = defocus(blurred_mosaic, light, p, frame_size, 1)
    else:
        raw = bayer_mosaic(integrate_pixel_area(defocus(lens_blur, light, p, frame_size, supersample), supersample))
    rgb = colour_matrix(demosaic_each(raw, [c.demosaic for c in captures]), p["crosstalk"])
    layer = shrink_denoised(rgb, p["chroma_denoise"], out_size)
    return with_contrast(layer / layer.mean(dim=(2, 3), keepdim=True).clamp(min=1e-6), p["moire_contrast"])


def with_contrast(layer: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) moiré layers of mean 1 scaled about 1 to RMS contrast `contrast` (B,); NaN leaves one as it is.

    How strongly a screen's grid aliases depends on focus, the sensor's anti-aliasing and the panel
    more than the simulator models; setting the contrast directly spans what real photos show.
    """
    deviation = layer - 1.0
    rms = portable(torch.sqrt, deviation.square().mean(dim=(1, 2, 3))).clamp(min=1e-6)
    scale = torch.where(torch.isnan(contrast), torch.ones_like(contrast), contrast / rms).reshape(-1, 1, 1, 1)
    return (1.0 + deviation * scale).clamp(min=0.0)  # light is never negative


def photograph_layered(light: torch.Tensor, content_side: int, captures: list[CaptureParams],
                       p: dict[str, torch.Tensor], frame_size: int, supersample: int,
                       reference: torch.Tensor, layer: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoded photo (output resolution) of the screen's light times its moiré layer, and the exposure gain.

    `light` is the content's `screen_light` (the moiré-free capture's); `layer` is rendered here unless
    given (a layer bank's); noise (averaged over the downscale² camera pixels of each output pixel),
    sharpening and JPEG follow.
    """
    if layer is None:
        layer = moire_layer(captures, p, content_side, frame_size, light.shape[-1], supersample)
    light = light * layer
    gain = exposure_gain(light, reference, p)
    noisy = add_sensor_noise(light * gain.reshape(-1, 1, 1, 1), p["shot_noise"] / p["downscale"] ** 2,
                             p["read_noise"] / p["downscale"], [c.noise_seed for c in captures])
    encoded = sharpen(camera_colour(noisy, p, torch.ones_like(gain)), p["sharpen"])
    return camera_jpeg(encoded, p["jpeg_quality"]), gain


def photograph_moire_free(light: torch.Tensor, captures: list[CaptureParams], p: dict[str, torch.Tensor],
                          reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoded photo of the screen's `light` with no moiré, and its exposure gain: the layered photo of a
    flat layer, the content through the lens first where the capture's moiré model photographs it (`render`)."""
    rendered = torch.tensor([not c.moire_layer for c in captures], device=light.device)
    light = lens_blur(light, torch.where(rendered, p["blur_sigma"] / p["downscale"], 0.0))
    # With the layer given, the sizes that would render one are not read.
    return photograph_layered(light, content_side=0, captures=captures, p=p, frame_size=0, supersample=1,
                              reference=reference, layer=torch.ones_like(light))


def photograph_pattern(clean_linear: torch.Tensor, captures: list[CaptureParams], p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The encoded frame of captures whose moiré is a drawn band pattern, at output resolution.

    The clean light times the pattern's modulation, then the camera's blur, noise, colour,
    sharpening and JPEG, as the physical path has them.
    """
    size = clean_linear.shape[-1]
    modulation = torch.stack([band_modulation(size, c.pattern, clean_linear.device) for c in captures])
    light = lens_blur(clean_linear * modulation, p["blur_sigma"])
    # The physical path's noise is averaged over downscale² camera pixels per output pixel.
    light = add_sensor_noise(light, p["shot_noise"] / p["downscale"] ** 2, p["read_noise"] / p["downscale"],
                             [c.noise_seed for c in captures])
    encoded = sharpen(camera_colour(light, p, torch.exp2(p["exposure_ev"])), p["sharpen"])
    return camera_jpeg(encoded, p["jpeg_quality"])


def simulate_batch(
    content: torch.Tensor, captures: list[CaptureParams], out_size: int, supersample: int,
    bank: LayerBank | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Photograph a batch of screens: (B, 3, N, N) uint8 content → (moiré, clean) in [0, 1], (B, 3, S, S).

    Each capture's result depends only on its own content and parameters (noise included, drawn
    from its `noise_seed`), not on the rest of the batch. The camera renders its frame at its own
    resolution (`downscale` × S), which is then shrunk to S; captures with different frame sizes
    are rendered group by group. Captures with a band pattern take the procedural path instead,
    moiré-free ones (`moire_free`) the layered path with a flat layer.
    The clean image is the content through the same pose and lens distortion, averaged over each
    output pixel, in the source's colours (`clean_target`) or, for `target_tone: capture`, in the
    camera's (`capture_toned_target`). Captures with a `layer_slot` take their layer from `bank`.
    """
    if bank is None and any(c.layer_slot is not None for c in captures):
        raise ValueError("captures assigned to a layer bank's slots need that bank (simulate_batch's `bank`)")
    p = capture_tensors(captures, content.device)
    grid = _output_samples(content, captures, out_size, supersample, p["radial_distortion"])
    clean_linear = clean_target(content, grid, supersample)
    moire = torch.empty_like(clean_linear)
    gain = torch.exp2(p["exposure_ev"])

    def rows_where(keep) -> torch.Tensor:
        return torch.tensor([i for i, c in enumerate(captures) if keep(c)], dtype=torch.long, device=content.device)

    def params_of(rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: values[rows] for name, values in p.items()}

    # The screen's light is shared by layered photos and capture-toned targets; per capture, so computing
    # it for the whole batch when any capture needs it keeps each capture's result its own.
    if any((c.moire_layer and c.pattern is None) or c.target_tone_of_capture or c.moire_free for c in captures):
        light = screen_light(content, grid, supersample, p)
    drawn = rows_where(lambda c: c.pattern is not None)
    if len(drawn):
        moire[drawn] = photograph_pattern(clean_linear[drawn], [captures[i] for i in drawn.tolist()], params_of(drawn))
    free = rows_where(lambda c: c.moire_free)
    if len(free):
        moire[free], gain[free] = photograph_moire_free(light[free], [captures[i] for i in free.tolist()],
                                                        params_of(free), clean_linear[free])
    frames = {(sensor_side(out_size, c.downscale), c.moire_layer, c.layer_slot is not None)
              for c in captures if c.pattern is None and not c.moire_free}
    for frame_size, layered, banked in sorted(frames):
        index = rows_where(lambda c: c.pattern is None and not c.moire_free
                           and sensor_side(out_size, c.downscale) == frame_size
                           and c.moire_layer == layered and (c.layer_slot is not None) == banked)
        group = params_of(index)
        chosen = [captures[i] for i in index.tolist()]
        if layered:
            layer = bank.layers(chosen, out_size, supersample, content.device) if banked else None
            moire[index], gain[index] = photograph_layered(light[index], content.shape[-1], chosen, group, frame_size,
                                                           supersample, clean_linear[index], layer)
        else:
            frame, gain[index] = photograph(content[index], chosen, group, frame_size, supersample, clean_linear[index])
            moire[index] = shrink_to(frame, out_size)
    moire = lens_blur(moire, p["output_blur"]).clamp_(0.0, 1.0)
    # Each target in its tone, each computed only for the captures that take it.
    clean = torch.empty_like(clean_linear)
    source_toned = rows_where(lambda c: not c.target_tone_of_capture)
    if len(source_toned):
        clean[source_toned] = tone_curve(clean_linear[source_toned], torch.full_like(source_toned, SOURCE_GAMMA,
                                                                                        dtype=clean.dtype))
    screen_toned = rows_where(lambda c: c.target_tone_of_capture and c.pattern is None)
    if len(screen_toned):
        group = params_of(screen_toned)
        clean[screen_toned] = capture_toned_target(light[screen_toned], group, gain[screen_toned])
    drawn_toned = rows_where(lambda c: c.target_tone_of_capture and c.pattern is not None)
    if len(drawn_toned):
        group = params_of(drawn_toned)
        clean[drawn_toned] = camera_colour(clean_linear[drawn_toned], group, torch.exp2(group["exposure_ev"]))
    softened = rows_where(lambda c: c.target_detail_of_capture)
    if len(softened):
        group = params_of(softened)
        sigma = content_blur_sigma([captures[i] for i in softened.tolist()], group)
        clean[softened] = lens_blur(sharpen(clean[softened], group["sharpen"]), sigma).clamp(0.0, 1.0)
    return moire, clean


def content_blur_sigma(captures: list[CaptureParams], p: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B,) output-pixel sigma of the blur each capture's content went through: the lens (where its path blurs
    the content: at camera resolution when rendered, at output resolution when drawn; the layered path blurs
    only its moiré) and the output softness, combined in quadrature."""
    rendered = torch.tensor([c.pattern is None and not c.moire_layer for c in captures], device=p["gamut"].device)
    drawn = torch.tensor([c.pattern is not None for c in captures], device=p["gamut"].device)
    lens = torch.where(rendered, p["blur_sigma"] / p["downscale"], torch.where(drawn, p["blur_sigma"], 0.0))
    return portable(torch.sqrt, lens**2 + p["output_blur"] ** 2)


def simulate_capture(
    source: np.ndarray, capture: CaptureParams, out_size: int, supersample: int, bank: LayerBank | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Photograph `source` on a screen: pixel-aligned (moiré, clean) RGB uint8 images (HxWx3)."""
    moire, clean = simulate_batch(content_batch([source], [capture]), [capture], out_size, supersample, bank)
    return tuple(to_uint8(image[0]).permute(1, 2, 0).numpy() for image in (moire, clean))
