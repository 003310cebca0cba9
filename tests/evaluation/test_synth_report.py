import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import ParamsError
from pipeline.evaluation.synth_report import (
    LUMA_WEIGHTS,
    compare_paired_sets,
    radial_power_spectrum,
    set_labels,
    shrink_to_max_side,
    spectrum_bin_centres,
)
from pipeline.io import write_png

runner = CliRunner()
SINE_FREQUENCY = 0.25  # cycles per pixel, along x
NOISE_SIGMA = 8.0  # grey levels


def _sine_set(root, rng, n=3, size=32):
    """Clean textures plus a known horizontal sinusoid of 0.25 cycles/px, amplitude 20 levels."""
    x = np.arange(size)
    sine = np.round(20 * np.cos(2 * np.pi * SINE_FREQUENCY * x + np.pi / 4)).astype(np.int16)
    for i in range(n):
        clean = rng.integers(40, 200, (size, size, 3)).astype(np.int16)
        write_png(root / "clean" / f"{i}.png", clean.astype(np.uint8))
        write_png(root / "moire" / f"{i}.png", (clean + sine[None, :, None]).astype(np.uint8))
    return root


def _noise_set(root, rng, n=4, size=64):
    """Clean textures plus white Gaussian noise (no clipping: clean stays within 60…190)."""
    for i in range(n):
        clean = rng.integers(60, 190, (size, size, 3)).astype(np.float64)
        moire = np.round(clean + rng.normal(0, NOISE_SIGMA, clean.shape))
        write_png(root / "clean" / f"{i}.png", clean.astype(np.uint8))
        write_png(root / "moire" / f"{i}.png", np.clip(moire, 0, 255).astype(np.uint8))
    return root


def _direct_psnr(root) -> float:
    """Mean PSNR (data range 255) of every pair, computed with numpy."""
    from pipeline.io import read_rgb

    values = []
    for moire_path in sorted((root / "moire").iterdir()):
        moire = read_rgb(moire_path).astype(np.float64)
        clean = read_rgb(root / "clean" / moire_path.name).astype(np.float64)
        values.append(10 * np.log10(255.0**2 / np.mean((moire - clean) ** 2)))
    return float(np.mean(values))


def _ring_of(frequency: float, n_bins: int) -> int:
    """Index of the ring of width 0.5 / n_bins cycles/px that holds `frequency`."""
    return int(frequency / (0.5 / n_bins))


def test_report_measures_psnr_and_locates_moire_frequency(tmp_path, rng):
    sine, noise = _sine_set(tmp_path / "sine", rng), _noise_set(tmp_path / "noise", rng)
    out = tmp_path / "report"
    summary = compare_paired_sets([("sine", sine), ("noise", noise)], out, n_bins=16)
    by_label = {s["label"]: s for s in summary["sets"]}

    for label, root in (("sine", sine), ("noise", noise)):
        assert by_label[label]["input_psnr_mean"] == pytest.approx(_direct_psnr(root), abs=1e-3)
        assert 0 < by_label[label]["input_ssim_mean"] < 1
    assert by_label["sine"]["count"] == 3 and by_label["noise"]["count"] == 4

    sine_spectrum = by_label["sine"]["spectrum"]
    peak = sine_spectrum["frequency"][int(np.argmax(sine_spectrum["power"]))]
    assert _ring_of(peak, 16) == _ring_of(SINE_FREQUENCY, 16)

    frequency = np.array(by_label["noise"]["spectrum"]["frequency"])
    power = np.array(by_label["noise"]["spectrum"]["power"])
    away_from_dc = power[frequency > 0.1]  # the window's main lobe dents the rings next to the removed mean
    assert away_from_dc.max() / away_from_dc.min() < 3
    # power is normalised so a white residual sits at its variance, whatever the image size; channels
    # carry independent noise, so the luma variance is σ² · Σ luma weight²
    expected = (NOISE_SIGMA**2 + 1 / 12) / 255**2 * float((LUMA_WEIGHTS**2).sum())
    assert np.median(away_from_dc) == pytest.approx(expected, rel=0.2)

    for name in ("input_psnr.png", "input_ssim.png", "residual_spectrum.png", "summary.json"):
        assert (out / name).stat().st_size > 0
    metrics = pd.read_csv(out / "input_metrics.csv")
    assert list(metrics.columns) == ["set", "pair", "input_psnr", "input_ssim"] and len(metrics) == 7
    spectrum = pd.read_csv(out / "residual_spectrum.csv")
    assert list(spectrum.columns) == ["set", "frequency", "power"]
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))

    # what dvc.yaml plots from these files: numbers on both axes (a pair's name on x drew an empty chart)
    for name, plot in _declared_plots().items():
        table = pd.read_csv(out / name)
        assert all(pd.api.types.is_numeric_dtype(table[plot[axis]]) for axis in ("x", "y")), (name, plot)


def _declared_plots() -> dict[str, dict]:
    """dvc.yaml's CSV plots of the synthesize stage's report, by file name."""
    stage = yaml.safe_load((Path(__file__).resolve().parents[2] / "dvc.yaml").read_text())["stages"]["synthesize"]
    plots = {}
    for entry in stage["plots"]:
        (path, props), = entry.items() if isinstance(entry, dict) else ((entry, {}),)
        if path.endswith(".csv"):
            plots[Path(path).name] = props
    assert set(plots) == {"input_metrics.csv", "residual_spectrum.csv"}
    return plots


def test_shrinking_rescales_frequency_to_resized_pixels():
    x = np.arange(64)
    plane = np.cos(2 * np.pi * 0.0625 * x)[None, :] * np.ones((32, 1))
    shrunk = shrink_to_max_side(plane, 16)
    assert shrunk.shape == (8, 16)
    assert shrink_to_max_side(plane, 0) is plane and shrink_to_max_side(plane, 64) is plane
    # 0.0625 cycles/px at 64 px wide is 0.25 cycles/px once 16 px wide
    power = radial_power_spectrum(shrunk, 8)
    assert spectrum_bin_centres(8)[np.nanargmax(power)] == pytest.approx(0.28125)


def test_labels_default_to_folder_names_and_stay_unique(tmp_path):
    a, b = tmp_path / "x" / "paired", tmp_path / "y" / "paired"
    assert set_labels([a, b, a]) == ["paired", "paired-2", "paired-3"]
    assert set_labels([a, b], ["real"]) == ["real", "paired"]
    with pytest.raises(ParamsError):
        set_labels([a], ["one", "two"])


def test_cli_json_has_one_object_with_a_mean_per_set(tmp_path, rng):
    sine = _sine_set(tmp_path / "sine", rng, n=2)
    result = runner.invoke(app, ["synth-report", "--pairs", str(sine), "--pairs", str(sine), "--label", "synthetic",
                                 "--out", str(tmp_path / "out"), "--json", "--max-pairs", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [s["label"] for s in summary["sets"]] == ["synthetic", "sine"]
    assert all(isinstance(s["input_psnr_mean"], float) and s["count"] == 1 for s in summary["sets"])


def test_unreadable_and_unmatched_pairs_are_counted_not_fatal(tmp_path, rng):
    sine = _sine_set(tmp_path / "sine", rng, n=2)
    (sine / "moire" / "broken.png").write_bytes(b"not a png")
    (sine / "clean" / "broken.png").write_bytes(b"not a png")
    write_png(sine / "moire" / "lonely.png", np.zeros((32, 32, 3), np.uint8))
    result = runner.invoke(app, ["synth-report", "--pairs", str(sine), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output  # done, two pairs skipped
    assert "skipped sine/broken.png" in result.stderr and "skipped sine/lonely.png" in result.stderr
    assert "plots:" in result.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["sets"][0]["count"] == 2 and summary["sets"][0]["skipped"] == 2


def test_folder_in_no_known_layout_is_one_line_exit_2_and_writes_nothing(tmp_path, rng):
    sine = _sine_set(tmp_path / "sine", rng, n=1)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    result = runner.invoke(app, ["synth-report", "--pairs", str(sine), "--pairs", str(tmp_path / "empty"),
                                 "--out", str(out)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "matches no known paired-dataset layout" in lines[0]
    assert result.stdout == "" and not out.exists()
