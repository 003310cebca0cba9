"""How much of the moiré residual a model removes, per band of spatial frequency.

The residual of an image is its tone-aligned difference from the clean target (so global tone,
which lives at frequency zero, does not count as moiré). Its energy is measured in three bands of
radial frequency, in cycles per pixel: `low` below 1/32 (periods over 32 px: wide bands, as in 4K
phone photos), `mid` 1/32 to 1/8 (periods of 8–32 px, FHDMi's stripes), `high` from 1/8 to the
Nyquist limit (fine screen-grid texture, demosaicing and JPEG artefacts). A model removes
`1 − E(output residual) / E(input residual)` of a band: 1 is all of it, 0 none, below 0 it adds some.
"""

from __future__ import annotations

import torch

BANDS: dict[str, tuple[float, float]] = {"low": (0.0, 1 / 32), "mid": (1 / 32, 1 / 8), "high": (1 / 8, float("inf"))}


def _hann(length: int) -> torch.Tensor:
    """A periodic-free Hann window that is not all zeros for short sides."""
    return torch.hann_window(length, periodic=False, dtype=torch.float64) if length > 2 else torch.ones(length, dtype=torch.float64)


def band_energies(residual: torch.Tensor, bands: dict[str, tuple[float, float]] = BANDS) -> dict[str, float]:
    """Energy of a C×H×W (or H×W) residual in each band: Hann-windowed power summed over channels and frequencies.

    The window's weighted mean is removed first, so no energy sits at frequency zero and image
    borders do not leak into the low band. Energies are per pixel (divided by Σ window²), so images
    of different sizes add up fairly.
    """
    planes = residual if residual.dim() == 3 else residual[None]
    height, width = planes.shape[-2:]
    window = _hann(height)[:, None] * _hann(width)[None, :]
    weight = window.sum().clamp(min=1e-12)
    power = torch.zeros(height, width // 2 + 1, dtype=torch.float64)
    for channel in planes:  # one channel at a time: a 4K float64 FFT of all three would need over 1 GB
        plane = channel.double()
        centred = plane - (plane * window).sum() / weight
        # a real plane's spectrum is symmetric: its half (rfft2) holds every power, at 2.4× the speed of the whole
        power += torch.fft.rfft2(centred * window).abs() ** 2 / (window**2).sum().clamp(min=1e-12)
    power /= height * width
    power *= _mirrored_columns(width)
    radius = torch.hypot(torch.fft.fftfreq(height, dtype=torch.float64)[:, None],
                         torch.fft.rfftfreq(width, dtype=torch.float64)[None, :])
    return {name: float(power[(radius > 0) & (radius >= low) & (radius < high)].sum())
            for name, (low, high) in bands.items()}


def _mirrored_columns(width: int) -> torch.Tensor:
    """How many columns of a whole spectrum of `width` each column of its rfft half stands for: 2, but 1 for the
    zero frequency and, for an even width, for the Nyquist column (each its own mirror)."""
    count = torch.full((width // 2 + 1,), 2.0, dtype=torch.float64)
    count[0] = 1.0
    if width % 2 == 0:
        count[-1] = 1.0
    return count


def removed_fraction(model_energy: float, input_energy: float) -> float:
    """Share of the input residual's energy a model removed (NaN where the input had none)."""
    return 1.0 - model_energy / input_energy if input_energy > 0 else float("nan")
