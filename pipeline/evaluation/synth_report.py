"""Compare paired moiré sets side by side: how strong the moiré is and at which frequencies it lives.

Built to calibrate synthetic data against real photos. Sets are folders `find_pairs` reads (generic
moire/ + clean/, or a published dataset's layout); pairs are read one at a time. Per set and pair:

- input PSNR / SSIM of the moiré image against its clean twin (the identity baseline a model must
  beat), RGB, whole image, via `pipeline.evaluation.metrics` (uint8 / 255 with data range 1.0,
  which is the same number as data range 255 on the uint8 values);
- the moiré residual r = moiré − clean (float, per channel, in [−1, 1]), reduced to BT.601 luma
  (the Y that JPEG codes) for a mean radial power spectrum.

Spectrum: each residual plane is optionally shrunk (area averaging) so its longest side is at most
`max_side`, the Hann-window-weighted mean is removed, a 2-D Hann window is applied, |FFT|² is
divided by Σ window² (so the mean over all frequency cells equals the windowed mean square of the
residual, whatever the image size) and averaged in rings of radius 0…0.5 cycles/pixel. Sets average
these per-pair curves. In real pairs the residual also holds global tone/colour differences and
misalignment between the two shots; those land in the lowest rings, moiré bands above them.

What is comparable: frequency is in cycles per pixel of the *resized* image. Shrinking every set to
the same longest side turns the axis into "cycles per picture width" (scaled), so sets of different
resolution but similar framing line up: is synthetic moiré as coarse or as fine, relative to the
picture, as real moiré? It no longer measures frequency against the camera's sensor grid, where the
aliasing physically happens; for that compare sets of similar resolution with `max_side=0` (never
resize). Area shrinking removes most content above the new Nyquist limit (a 1920-px set shrunk to
512 loses moiré finer than ≈ 0.13 cycles/pixel of the original) and scales power density by the
shrink factor², so compare peak positions and curve shapes, and absolute levels only between sets
that end at the same size. Images already within `max_side` are never enlarged.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from pipeline.data.dataset import to_tensor
from pipeline.data.manifest import read_pair
from pipeline.errors import DemoireError, InputDataError, ParamsError
from pipeline.evaluation.metrics import image_metrics
from pipeline.io import atomic_dir, atomic_path, write_json
from pipeline.sources.paired_datasets import DatasetPair, PairList, find_pairs

# BT.601: the luma JPEG codes, so camera moiré is measured the way the ISP's encoder saw it
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
DEFAULT_MAX_SIDE = 512
DEFAULT_BINS = 64
MIN_SIDE = 8  # a Hann window over fewer pixels leaves almost nothing to transform
NYQUIST = 0.5  # cycles per pixel

PairCallback = Callable[[str, str], None]


@dataclass
class PairedSetReport:
    """Input metrics and mean residual spectrum of one paired set."""

    label: str
    root: Path
    pairs: list[str] = field(default_factory=list)
    input_psnr: list[float] = field(default_factory=list)
    input_ssim: list[float] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    frequency: np.ndarray = field(default_factory=lambda: np.zeros(0))
    power: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def summary(self) -> dict:
        """JSON-ready statistics; spectrum bins no pair populated are left out."""
        psnr, ssim = np.asarray(self.input_psnr), np.asarray(self.input_ssim)
        populated = np.isfinite(self.power)
        return {
            "label": self.label,
            "path": str(self.root),
            "count": len(self.pairs),
            "skipped": len(self.skipped),
            "skipped_pairs": [{"name": name, "reason": reason} for name, reason in self.skipped],
            "input_psnr_mean": _json_number(psnr.mean()),
            "input_psnr_std": _json_number(psnr.std()),
            "input_psnr_min": _json_number(psnr.min()),
            "input_psnr_max": _json_number(psnr.max()),
            "input_ssim_mean": _json_number(ssim.mean()),
            "input_ssim_std": _json_number(ssim.std()),
            "spectrum": {
                "frequency": [float(f) for f in self.frequency[populated]],
                "power": [float(p) for p in self.power[populated]],
            },
        }


def _json_number(value: float) -> float | None:
    """A float JSON can hold: ±inf (identical pair → infinite PSNR) and NaN become null."""
    return float(value) if math.isfinite(value) else None


def set_labels(roots: list[Path], labels: list[str] | None = None) -> list[str]:
    """One unique label per set: the given ones in order, then folder names; repeats get -2, -3…"""
    labels = list(labels or [])
    if len(labels) > len(roots):
        raise ParamsError(
            f"{len(labels)} labels for {len(roots)} paired folders (give at most one --label per --pairs)")
    wanted = labels + [Path(os.path.abspath(root)).name for root in roots[len(labels):]]  # `.` → its folder name
    unique: list[str] = []
    for label in wanted:
        candidate, n = label, 1
        while candidate in unique:
            n += 1
            candidate = f"{label}-{n}"
        unique.append(candidate)
    return unique


def moire_residual_luma(moire: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """BT.601 luma of moiré − clean, float64 in [−1, 1], from two HxWx3 uint8 images."""
    residual = (moire.astype(np.float64) - clean.astype(np.float64)) / 255.0
    return residual @ LUMA_WEIGHTS


def shrink_to_max_side(plane: np.ndarray, max_side: int) -> np.ndarray:
    """Area-average a 2-D plane so its longest side is at most `max_side` (0 or already small: unchanged)."""
    h, w = plane.shape
    if max_side <= 0 or max(h, w) <= max_side:
        return plane
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # BOX is true area averaging: the anti-aliasing filter that invents nothing and folds little back
    shrunk = Image.fromarray(plane.astype(np.float32)).resize(size, Image.Resampling.BOX)  # 2-D float32 → mode F
    return np.asarray(shrunk, dtype=np.float64)


def spectrum_bin_centres(n_bins: int) -> np.ndarray:
    """Centres of `n_bins` equal rings over 0…0.5 cycles/pixel."""
    edges = np.linspace(0.0, NYQUIST, n_bins + 1)
    return (edges[:-1] + edges[1:]) / 2


def radial_power_spectrum(plane: np.ndarray, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """Hann-windowed power spectrum of a 2-D plane averaged in rings over 0…0.5 cycles/pixel (NaN: empty ring)."""
    h, w = plane.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    # removing the window-weighted mean zeroes the DC cell exactly, so it cannot leak into the low rings
    centred = plane - (plane * window).sum() / window.sum()
    power = np.abs(np.fft.fft2(centred * window)) ** 2 / (window**2).sum()
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    # the DC cell is zero by construction; the corners beyond Nyquist exist only along diagonals
    inside = (radius > 0) & (radius <= NYQUIST)
    ring = np.minimum((radius[inside] / NYQUIST * n_bins).astype(int), n_bins - 1)
    sums = np.bincount(ring, weights=power[inside], minlength=n_bins)
    counts = np.bincount(ring, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def spread_pairs(pairs: list[DatasetPair], max_pairs: int | None) -> list[DatasetPair]:
    """At most `max_pairs` pairs evenly spread over the sorted list, so a sample spans the whole set."""
    if max_pairs is None or len(pairs) <= max_pairs:
        return pairs
    return [pairs[i * len(pairs) // max_pairs] for i in range(max_pairs)]


def describe_pairs(
    found: PairList,
    label: str,
    root: Path,
    max_pairs: int | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    n_bins: int = DEFAULT_BINS,
    on_pair: PairCallback | None = None,
) -> PairedSetReport:
    """Input PSNR/SSIM per pair and the mean residual spectrum of one listed set, one pair in memory at a time."""
    report = PairedSetReport(label=label, root=Path(root), skipped=[(s.name, s.reason) for s in found.skipped])
    power_sum, power_count = np.zeros(n_bins), np.zeros(n_bins)
    for pair in spread_pairs(found.pairs, max_pairs):
        try:
            moire, clean = read_pair(pair.moire_path, pair.clean_path)
            if min(moire.shape[:2]) < MIN_SIDE:
                raise InputDataError(f"image is {moire.shape[1]}x{moire.shape[0]}, smaller than {MIN_SIDE} px")
        except DemoireError as exc:
            report.skipped.append((pair.name, str(exc)))
            continue
        scores = image_metrics(to_tensor(moire), to_tensor(clean))
        ring_power = radial_power_spectrum(shrink_to_max_side(moire_residual_luma(moire, clean), max_side), n_bins)
        populated = np.isfinite(ring_power)
        power_sum[populated] += ring_power[populated]
        power_count += populated
        report.pairs.append(pair.name)
        report.input_psnr.append(scores["psnr"])
        report.input_ssim.append(scores["ssim"])
        if on_pair is not None:
            on_pair(label, pair.name)
    if not report.pairs:
        reason = f" (first: {report.skipped[0][0]}: {report.skipped[0][1]})" if report.skipped else ""
        raise InputDataError(f"no usable pairs in {root}{reason}")
    report.frequency = spectrum_bin_centres(n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        report.power = np.where(power_count > 0, power_sum / power_count, np.nan)
    return report


def compare_paired_sets(
    sets: list[tuple[str, Path]],
    out_dir: Path,
    max_pairs: int | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    n_bins: int = DEFAULT_BINS,
    layout: str = "auto",
    on_pair: PairCallback | None = None,
) -> dict:
    """Describe every (label, folder) set and write the report under `out_dir`; return summary.json's content.

    Folders are read with `find_pairs` (generic moire/ + clean/, or a published dataset's layout).
    """
    _check_options(max_pairs, max_side, n_bins)
    # list every set first: a malformed folder fails before minutes of work on the others
    listings = [(label, Path(root), find_pairs(root, layout)) for label, root in sets]
    reports = [
        describe_pairs(found, label, root, max_pairs, max_side, n_bins, on_pair) for label, root, found in listings
    ]
    summary = {
        "max_side": max_side,
        "spectrum_bins": n_bins,
        "spectrum_of": "BT.601 luma of moire - clean, in [-1, 1]",
        "frequency_unit": "cycles per pixel of the residual shrunk to max_side",
        "sets": [report.summary() for report in reports],
    }
    write_synth_report(reports, summary, out_dir)
    return summary


def _check_options(max_pairs: int | None, max_side: int, n_bins: int) -> None:
    """ParamsError naming the first option out of range."""
    if max_pairs is not None and max_pairs < 1:
        raise ParamsError(f"max_pairs = {max_pairs}: must be at least 1 (or left out for all pairs)")
    if max_side != 0 and max_side < MIN_SIDE:
        raise ParamsError(f"max_side = {max_side}: must be 0 (never resize) or at least {MIN_SIDE}")
    if n_bins < 1:
        raise ParamsError(f"spectrum bins = {n_bins}: must be at least 1")


def write_synth_report(reports: list[PairedSetReport], summary: dict, out_dir: Path) -> None:
    """Plots, DVC-plottable CSVs and summary.json in `out_dir`, which is replaced as a whole.

    One folder swap: a killed run never leaves a mix of old and new plots.
    """
    metrics = pd.DataFrame(
        [
            {"set": r.label, "pair": name, "input_psnr": psnr, "input_ssim": ssim}
            for r in reports
            for name, psnr, ssim in zip(r.pairs, r.input_psnr, r.input_ssim)
        ]
    )
    spectrum = pd.DataFrame(
        [
            {"set": r.label, "frequency": f, "power": p}
            for r in reports
            for f, p in zip(r.frequency, r.power)
            if np.isfinite(p)
        ]
    )
    with atomic_dir(out_dir) as staging:
        _write_csv(metrics, staging / "input_metrics.csv")
        _write_csv(spectrum, staging / "residual_spectrum.csv")
        _plot_histograms(reports, "input_psnr", "input PSNR (dB)", staging / "input_psnr.png")
        _plot_histograms(reports, "input_ssim", "input SSIM", staging / "input_ssim.png")
        _plot_spectra(reports, staging / "residual_spectrum.png")
        write_json(staging / "summary.json", summary)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """A CSV with fixed float formatting, so the same inputs give the same bytes."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def _save_figure(figure: Figure, path: Path) -> None:
    """Render with Agg (no global pyplot state) and write the PNG atomically."""
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})


def _plot_histograms(reports: list[PairedSetReport], metric: str, quantity: str, path: Path) -> None:
    """Overlaid density histograms of one input metric per set, each set's mean as a dashed line."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    values = [np.asarray(getattr(r, metric), dtype=np.float64) for r in reports]
    finite = np.concatenate([v[np.isfinite(v)] for v in values])
    # shared edges, so bar widths and densities compare across sets
    edges = np.histogram_bin_edges(finite, bins=min(30, max(5, len(finite) // 3))) if finite.size else 10
    for i, (report, v) in enumerate(zip(reports, values)):
        color = f"C{i % 10}"
        v = v[np.isfinite(v)]
        axes.hist(v, bins=edges, density=True, alpha=0.45, color=color, label=f"{report.label} (n={len(v)})")
        if v.size:
            axes.axvline(v.mean(), color=color, linestyle="--", linewidth=1.5)
    axes.set_xlabel(f"{quantity} of moiré vs clean")
    axes.set_ylabel("density")
    axes.set_title(f"{quantity} per set (dashed: mean)")
    axes.legend()
    _save_figure(figure, path)


def _plot_spectra(reports: list[PairedSetReport], path: Path) -> None:
    """Mean radial power spectrum of the moiré residual per set, log power."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for i, report in enumerate(reports):
        populated = np.isfinite(report.power) & (report.power > 0)
        axes.plot(report.frequency[populated], report.power[populated], color=f"C{i % 10}",
                  marker=".", label=f"{report.label} (n={len(report.pairs)})")
    axes.set_yscale("log")
    axes.set_xlim(0, NYQUIST)
    axes.set_xlabel("radial frequency (cycles / pixel of the resized residual)")
    axes.set_ylabel("mean power of luma residual")
    axes.set_title("moiré residual spectrum (Hann window, ring average)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    _save_figure(figure, path)
