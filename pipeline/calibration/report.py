"""What `demoire calibrate` writes: the preset file, and a before/after report of real vs synthetic statistics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.calibration.search import CalibrationResult, preset_document, summary
from pipeline.calibration.statistics import OCTAVES, PairedStatistics
from pipeline.io import atomic_path, write_json


def write_preset(path: Path, result: CalibrationResult, provenance: str, overwrite: bool = True) -> None:
    """The preset file (YAML, with a header saying how it was made), written atomically; with `overwrite`
    False an existing file, even one written meanwhile, is kept (OutputExistsError)."""
    header = "".join(f"# {line}\n" for line in provenance.splitlines())
    body = yaml.safe_dump(preset_document(result), sort_keys=False, default_flow_style=None)
    with atomic_path(Path(path), overwrite) as tmp:
        tmp.write_text(header + body)


def write_calibration_report(folder: Path, result: CalibrationResult,
                             skipped: Sequence[tuple[str, str]] = ()) -> list[Path]:
    """summary.json (skipped real photos named) and statistics.png (real, base preset, calibrated) in `folder`;
    returns the files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "summary.json", summary(result, skipped))
    figure = Figure(figsize=(10, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    bands = list(OCTAVES)
    x = np.arange(len(bands))
    curves = (("real", result.real, "k"), ("base preset", result.before, "C0"), ("calibrated", result.after, "C3"))
    if isinstance(result.real, PairedStatistics):
        for label, statistics, colour in curves:
            left.plot(x, statistics.luma, marker="o", color=colour, label=label)
            right.plot(x, statistics.chroma, marker="o", color=colour, label=label)
        left.set_title("luma of the tone-aligned residual")
        right.set_title("chroma of the tone-aligned residual")
        for axes in (left, right):
            axes.set_ylabel("log10 power")
    else:
        for label, statistics, colour in curves:
            left.plot(x, statistics.colour_ratio, marker="o", color=colour, label=label)
            right.plot(x, statistics.period_histogram, marker="o", color=colour, label=label)
        left.set_title("chroma over luma power")
        left.set_ylabel("log10 ratio")
        right.set_title("period of each tile's strongest colour pattern")
        right.set_ylabel("share of tiles")
    for axes in (left, right):
        axes.set_xticks(x, bands, rotation=30)
        axes.set_xlabel("period band")
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.suptitle(f"distance to real: base {result.distance_before:.3f} → calibrated {result.distance_after:.3f}")
    FigureCanvasAgg(figure)
    with atomic_path(folder / "statistics.png") as tmp:
        figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    return [folder / "summary.json", folder / "statistics.png"]
