"""Statistics of moiré photos that a simulator can be fitted to, with or without ground truth.

Paired sets (moiré + clean): the tone-aligned residual's power in octave bands of spatial
frequency, for luma and for chroma separately (real moiré is mostly colour), and the capture's
tone against its truth (brightness ratio and contrast ratio, in log2).

Unpaired moiré photos: what needs no ground truth. The photo's own chroma power per octave band,
relative to its luma power in the same band: natural content puts little colour at fine scales,
moiré puts a lot. And where each photo's strongest colour pattern lies: histograms of the period
and orientation of the peak of its chroma spectrum, per tile.

Frequencies are in cycles per pixel of the images as given; compare sets of similar resolution
(the simulator renders at `--size`, so choose it near the real photos' scale of moiré).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.data.dataset import Pair, to_tensor
from pipeline.evaluation.residual_bands import band_energies
from pipeline.evaluation.tone import align_tone

OCTAVES: dict[str, tuple[float, float]] = {
    f"{round(1 / high)}-{round(1 / low)} px": (low, high)
    for low, high in ((1 / 128, 1 / 64), (1 / 64, 1 / 32), (1 / 32, 1 / 16), (1 / 16, 1 / 8), (1 / 8, 1 / 4), (1 / 4, 1 / 2))
}
"""Octave bands of radial frequency (cycles per pixel), named by their periods: 64–128 px down to 2–4 px."""
LUMA = (0.299, 0.587, 0.114)
TILE = 128  # pixels per side of the tiles whose chroma peak is located
MIN_SIDE = max(TILE, round(1 / min(low for low, _ in OCTAVES.values())))
"""Pixels a side a photo needs: the widest band's longest period, and one tile."""
ORIENTATION_BINS = 6  # of 30°
FLOOR = 1e-12  # powers are compared in log10; an empty band counts as this


def luma_and_chroma(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BT.601 luma (H×W) and two colour-difference planes (2×H×W) of a 3×H×W image."""
    weights = torch.tensor(LUMA, dtype=image.dtype).reshape(3, 1, 1)
    luma = (image * weights).sum(dim=0)
    return luma, torch.stack([image[0] - luma, image[2] - luma])


def log_octave_powers(plane: torch.Tensor) -> np.ndarray:
    """log10 of a plane's power in each octave band (OCTAVES order)."""
    energies = band_energies(plane, OCTAVES)
    return np.log10(np.maximum(np.array(list(energies.values())), FLOOR))


@dataclass(frozen=True)
class PairedStatistics:
    """Means over a paired set: residual luma/chroma log-power per octave, and log2 tone ratios."""

    luma: np.ndarray
    chroma: np.ndarray
    brightness: float  # log2 of mean(moiré) / mean(clean)
    contrast: float  # log2 of std(moiré) / std(clean)
    count: int

    def vector(self) -> np.ndarray:
        """Everything as one vector, for distances."""
        return np.concatenate([self.luma, self.chroma, [self.brightness, self.contrast]])


def paired_statistics(pairs: list[Pair]) -> PairedStatistics:
    """Statistics of (moiré, clean) uint8 pairs."""
    luma, chroma, brightness, contrast = [], [], [], []
    for moire, clean in pairs:
        x, y = to_tensor(moire).double(), to_tensor(clean).double()
        residual_luma, residual_chroma = luma_and_chroma(align_tone(x, y) - y)
        luma.append(log_octave_powers(residual_luma))
        chroma.append(log_octave_powers(residual_chroma))
        brightness.append(math.log2(max(float(x.mean()), 1e-6) / max(float(y.mean()), 1e-6)))
        contrast.append(math.log2(max(float(x.std()), 1e-6) / max(float(y.std()), 1e-6)))
    return PairedStatistics(np.mean(luma, axis=0), np.mean(chroma, axis=0), float(np.mean(brightness)),
                            float(np.mean(contrast)), len(pairs))


@dataclass(frozen=True)
class UnpairedStatistics:
    """Means over a set of moiré photos: chroma-over-luma log-power per octave, peak period and orientation histograms."""

    colour_ratio: np.ndarray
    period_histogram: np.ndarray  # share of tiles whose chroma peak falls in each octave
    orientation_histogram: np.ndarray  # share of tiles per 30° of the peak's direction
    count: int

    def vector(self) -> np.ndarray:
        """Everything as one vector, for distances."""
        return np.concatenate([self.colour_ratio, self.period_histogram, self.orientation_histogram])


def _chroma_peaks(chroma: torch.Tensor) -> list[tuple[float, float]]:
    """(frequency, orientation in degrees) of the strongest chroma component of each TILE×TILE tile."""
    peaks = []
    height, width = chroma.shape[-2:]
    frequencies = torch.fft.fftfreq(TILE, dtype=torch.float64)
    fy, fx = frequencies[:, None].expand(TILE, TILE), frequencies[None, :].expand(TILE, TILE)
    radius = torch.hypot(fx, fy)
    usable = radius >= min(low for low, _ in OCTAVES.values())
    window = torch.hann_window(TILE, periodic=False, dtype=torch.float64)
    window = window[:, None] * window[None, :]
    for top in range(0, height - TILE + 1, TILE):
        for left in range(0, width - TILE + 1, TILE):
            tile = chroma[:, top : top + TILE, left : left + TILE]
            tile = tile - tile.mean(dim=(-2, -1), keepdim=True)
            power = (torch.fft.fft2(tile * window).abs() ** 2).sum(dim=0)
            power[~usable] = 0
            index = int(torch.argmax(power))
            row, column = divmod(index, TILE)
            angle = math.degrees(math.atan2(float(fy[row, column]), float(fx[row, column]))) % 180.0
            peaks.append((float(radius[row, column]), angle))
    return peaks


def unpaired_statistics(images: list[np.ndarray]) -> UnpairedStatistics:
    """Statistics of moiré photos (uint8 H×W×3) without their clean twins."""
    ratios, peaks = [], []
    for image in images:
        luma, chroma = luma_and_chroma(to_tensor(image).double())
        ratios.append(log_octave_powers(chroma) - log_octave_powers(luma))
        peaks += _chroma_peaks(chroma)
    edges = [low for low, _ in OCTAVES.values()] + [max(high for _, high in OCTAVES.values()) + 1e-9]
    frequency = np.array([f for f, _ in peaks]) if peaks else np.zeros(0)
    angle = np.array([a for _, a in peaks]) if peaks else np.zeros(0)
    periods = np.histogram(frequency, bins=edges)[0].astype(float)
    orientations = np.histogram(angle, bins=ORIENTATION_BINS, range=(0.0, 180.0))[0].astype(float)
    total = max(len(peaks), 1)
    return UnpairedStatistics(np.mean(ratios, axis=0), periods / total, orientations / total, len(images))


def statistics_distance(real: PairedStatistics | UnpairedStatistics,
                        synthetic: PairedStatistics | UnpairedStatistics) -> float:
    """Root-mean-square difference of two sets' statistics (log10 powers, log2 tone ratios, shares)."""
    return float(np.sqrt(np.mean((real.vector() - synthetic.vector()) ** 2)))
