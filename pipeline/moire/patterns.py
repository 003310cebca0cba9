"""Procedural moiré: band patterns drawn directly, the domain-randomisation counterpart of the physics.

Real moiré is the beat between a screen's pixel grid and a camera's: seen in the photo it is a
multiplicative modulation of the screen's light by one or two families of bands, curved by the
lens and the screen's tilt, coloured because the red, green and blue subpixels beat in different
phases, stronger in some parts of the frame than in others, over a fine residue of the grid. The
simulator (`simulate.py`) derives all of that from the physics of one setup at a time; this module
draws it from wide random ranges instead, the way UniDemoiré blends captured moiré patterns into
clean images and Real-ESRGAN randomises its degradations, so that a model sees more kinds of moiré
than any calibration would give it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.moire.portable import portable


@dataclass(frozen=True)
class BandPattern:
    """Every sampled parameter of one procedural moiré field (recorded per pair in the manifest)."""

    period_px: float  # of the first band family, output pixels
    angle_deg: float
    lattice: bool  # a second family across the first: the checkered blobs of 2-D beats
    second_period_ratio: float
    second_angle_deg: float
    harmonic: float  # weight of the second harmonic: sharper, less sinusoidal bands
    colour_phase: float  # phase step between R, G and B (radians): 0 gives grey bands
    amplitude: float  # modulation depth of the light
    envelope_scale_px: float  # size of the regions over which the strength varies
    envelope_floor: float  # weakest strength, relative to `amplitude`
    curvature: float  # radial bending of the bands across the frame
    tilt: float  # projective foreshortening of the bands
    tilt_angle_deg: float
    warp_px: float  # amplitude of a smooth random displacement (wavy bands)
    texture_period_px: float  # the fine grid residue
    texture_amplitude: float
    phase_seed: int


def sample_band_pattern(rng: np.random.Generator, period_px: tuple[float, float], amplitude: tuple[float, float]) -> BandPattern:
    """Draw one pattern; periods and amplitudes log-uniform within the given ranges."""

    def log_uniform(bounds: tuple[float, float]) -> float:
        return float(math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]))))

    period = log_uniform(period_px)
    return BandPattern(
        period_px=period,
        angle_deg=float(rng.uniform(0.0, 180.0)),
        lattice=bool(rng.random() < 0.5),
        second_period_ratio=float(rng.uniform(0.7, 1.4)),
        second_angle_deg=float(rng.uniform(60.0, 120.0)),
        harmonic=float(rng.uniform(0.0, 0.5)),
        colour_phase=float(rng.uniform(-2.1, 2.1)),
        amplitude=log_uniform(amplitude),
        envelope_scale_px=float(rng.uniform(2.0, 8.0) * period),
        envelope_floor=float(rng.uniform(0.0, 1.0)),
        curvature=float(rng.uniform(-0.3, 0.3)),
        tilt=float(rng.uniform(0.0, 0.3)),
        tilt_angle_deg=float(rng.uniform(0.0, 360.0)),
        warp_px=float(rng.uniform(0.0, 0.5) * period),
        texture_period_px=float(rng.uniform(2.0, 4.0)),
        texture_amplitude=float(rng.uniform(0.0, 0.04)),
        phase_seed=int(rng.integers(0, 2**62)),
    )


def _frame_coordinates(size: int, pattern: BandPattern, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates (x, y) after the pattern's tilt, lens curvature and smooth warp, in pixels."""
    half = size / 2
    axis = (torch.arange(size, dtype=torch.float32, device=device) + 0.5 - half) / half
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    bend = 1.0 + pattern.curvature * (xs**2 + ys**2)
    phi = math.radians(pattern.tilt_angle_deg)
    divide = 1.0 - pattern.tilt * (xs * math.cos(phi) + ys * math.sin(phi)) / 2
    x, y = xs * bend / divide * half, ys * bend / divide * half
    generator = torch.Generator().manual_seed(pattern.phase_seed)
    for _ in range(3):  # a few slow waves of displacement, different in x and y
        kx, ky, dx, dy = (torch.rand(4, generator=generator) * 2 - 1).tolist()
        scale = pattern.envelope_scale_px * 2
        phase = float(torch.rand(1, generator=generator)) * 2 * math.pi
        wave = portable(torch.sin, 2 * math.pi * (kx * x + ky * y) / scale + phase)
        x, y = x + pattern.warp_px * dx * wave / 3, y + pattern.warp_px * dy * wave / 3
    return x, y


def _bands(x: torch.Tensor, y: torch.Tensor, period: float, angle_deg: float, phase: float,
           harmonic: float, colour_phase: float) -> torch.Tensor:
    """(3, H, W) band profile of one family in [-1, 1]-ish, each colour shifted by `colour_phase`."""
    theta = math.radians(angle_deg)
    along = 2 * math.pi * (x * math.cos(theta) + y * math.sin(theta)) / period + phase
    shifts = torch.tensor([-colour_phase, 0.0, colour_phase], device=x.device).reshape(3, 1, 1)
    angle = along[None] + shifts
    return (portable(torch.cos, angle) + harmonic * portable(torch.cos, 2 * angle)) / (1.0 + harmonic)


def band_modulation(size: int, pattern: BandPattern, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """(3, S, S) multiplicative modulation of the light (mean ≈ 1, never negative) for one pattern."""
    x, y = _frame_coordinates(size, pattern, device)
    generator = torch.Generator().manual_seed(pattern.phase_seed + 1)
    phases = (torch.rand(4, generator=generator) * 2 * math.pi).tolist()
    bands = _bands(x, y, pattern.period_px, pattern.angle_deg, phases[0], pattern.harmonic, pattern.colour_phase)
    if pattern.lattice:
        second = _bands(x, y, pattern.period_px * pattern.second_period_ratio,
                        pattern.angle_deg + pattern.second_angle_deg, phases[1], pattern.harmonic, pattern.colour_phase)
        bands = (bands + second) / 2 + bands * second / 2  # a product term gives the checkered blobs
    envelope_wave = portable(torch.sin, 2 * math.pi * (x * 0.8 + y * 0.6) / pattern.envelope_scale_px + phases[2])
    envelope = pattern.envelope_floor + (1 - pattern.envelope_floor) * (0.5 + 0.5 * envelope_wave)
    texture = pattern.texture_amplitude * _bands(x, y, pattern.texture_period_px, pattern.angle_deg + 45.0,
                                                 phases[3], 0.0, 2.1)
    return (1.0 + pattern.amplitude * envelope[None] * bands + texture).clamp(min=0.0)
