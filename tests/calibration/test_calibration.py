import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.calibration.real_sets import read_real_photos
from pipeline.calibration.search import KNOBS, calibrate, knob_overrides
from pipeline.calibration.statistics import (
    OCTAVES, paired_statistics, statistics_distance, unpaired_statistics,
)
from pipeline.cli import app
from pipeline.config import parse_params
from pipeline.errors import InputDataError, ParamsError
from pipeline.io import write_png


def _striped_pair(period: float, colour: bool, size: int = 128, seed: int = 0):
    """A smooth clean image and its copy with vertical stripes of `period` px, coloured or grey."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size].astype(float)
    clean = np.stack([60 + 0.8 * xs + 0.3 * ys, 90 + 0.5 * ys, 120 + 0.2 * xs], axis=-1) + rng.normal(0, 1, (size, size, 3))
    wave = 25 * np.cos(2 * np.pi * xs / period)
    stripes = np.stack([wave, -wave, wave], axis=-1) if colour else np.stack([wave] * 3, axis=-1)
    return (np.clip(clean + stripes, 0, 255).astype(np.uint8), np.clip(clean, 0, 255).astype(np.uint8))


def test_paired_statistics_put_colour_stripes_in_their_octave_and_in_chroma():
    bands = list(OCTAVES)
    stats = paired_statistics([_striped_pair(12.0, colour=True)])  # 12 px: the 8–16 px octave
    assert bands[int(np.argmax(stats.chroma))] == "8-16 px"
    grey = paired_statistics([_striped_pair(12.0, colour=False)])
    assert grey.luma[3] > stats.luma[3] + 0.5  # grey stripes live in luma, coloured ones far less
    assert abs(stats.brightness) < 0.05 and stats.count == 1


def test_unpaired_statistics_find_the_period_and_orientation_of_colour_moire():
    moire, _ = _striped_pair(24.0, colour=True, size=256)
    stats = unpaired_statistics([moire])
    assert list(OCTAVES)[int(np.argmax(stats.period_histogram))] == "16-32 px"
    assert np.argmax(stats.orientation_histogram) == 0  # vertical stripes vary along x: 0°
    assert stats.period_histogram.sum() == pytest.approx(1.0)
    assert statistics_distance(stats, stats) == 0.0


def test_unpaired_photos_too_small_for_the_widest_band_are_skipped_and_named(tmp_path):
    write_png(tmp_path / "big.png", _striped_pair(24.0, colour=True, size=128)[0])
    write_png(tmp_path / "narrow.png", _striped_pair(24.0, colour=True, size=256)[0][:100])
    pairs, photos, skipped = read_real_photos([tmp_path])
    assert not pairs and [photo.shape for photo in photos] == [(128, 128, 3)]
    assert skipped == [("narrow.png", "256×100 is smaller than 128 px a side, the longest period measured")]
    (tmp_path / "big.png").unlink()  # none left: the error says why, not "no readable photos"
    with pytest.raises(InputDataError, match=r"^no usable real photos matching '\*' in .*: all 1 skipped, e.g. "
                                             r"narrow.png: 256×100 is smaller than 128 px a side"):
        read_real_photos([tmp_path])


def test_knobs_give_ranges_inside_what_the_params_allow():
    overrides = knob_overrides({f"{k.name}.first": k.low[1] for k in KNOBS} | {f"{k.name}.width": k.width[1] for k in KNOBS})
    cfg = parse_params({"synthesize": overrides}).synthesize  # validates every range
    assert cfg.optics.blur_sigma[0] <= cfg.optics.blur_sigma[1]
    exposure = overrides["sensor"]["exposure_ev"]
    assert exposure[0] < KNOBS[4].low[1] < exposure[1]  # centred knob: both sides of its centre


def test_calibration_is_repeatable_and_never_worse_than_its_best_trial():
    real = paired_statistics([_striped_pair(10.0, colour=True), _striped_pair(20.0, colour=True, seed=1)])
    first = calibrate(real, trials=2, size=128, n_pairs=2, seed=3)
    second = calibrate(real, trials=2, size=128, n_pairs=2, seed=3)
    assert first.overrides == second.overrides and first.distance_after == second.distance_after
    assert first.distance_after == pytest.approx(min(first.history))
    with pytest.raises(ParamsError, match="trials = 0"):
        calibrate(real, trials=0)
    # a sample smaller than the widest band's period read its band as empty (log10 power at the floor, -12)
    with pytest.raises(ParamsError, match=r"^size = 64: must be at least 128 px, as the real photos must"):
        calibrate(real, size=64)


def test_calibrate_command_writes_a_preset_the_pipeline_accepts(tmp_path):
    root = tmp_path / "real"
    for i, period in enumerate((9.0, 14.0, 21.0)):
        moire, clean = _striped_pair(period, colour=True, seed=i)
        write_png(root / "moire" / f"p{i}.png", moire)
        write_png(root / "clean" / f"p{i}.png", clean)
    (root / "moire" / "broken.png").write_bytes(b"not a png")
    (root / "clean" / "broken.png").write_bytes(b"not a png")
    small_moire, small_clean = _striped_pair(9.0, colour=True, size=96)  # its 64–128 px band would read as empty
    write_png(root / "moire" / "small.png", small_moire)
    write_png(root / "clean" / "small.png", small_clean)
    preset = tmp_path / "mine.yaml"
    args = ["calibrate", "--real", str(root), "--out", str(preset), "--trials", "2", "--pairs", "2", "--size", "128",
            "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # done, one pair skipped
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["real"]["kind"] == "paired" and summary["real"]["count"] == 3 and summary["trials"] == 2
    assert "skipped broken.png" in result.stderr
    assert [item["name"] for item in summary["skipped"]] == ["broken.png", "small.png"]
    assert json.loads((tmp_path / "mine-report" / "summary.json").read_text())["skipped"] == summary["skipped"]
    assert "skipped small.png: 96×96 is smaller than 128 px a side, the longest period measured" in result.stderr
    document = yaml.safe_load(preset.read_text())
    assert document["base"] == "default" and preset.read_text().startswith("# written by demoire calibrate")
    cfg = parse_params({"synthesize": {"preset": str(preset)}}).synthesize
    assert list(cfg.optics.blur_sigma) == document["optics"]["blur_sigma"]
    assert (tmp_path / "mine-report" / "statistics.png").is_file()
    worse = summary["distance_after"] >= summary["distance_before"]
    assert ("warning: the calibrated preset is no closer to the real photos than its base default" in result.stderr) == worse

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "exists; choose another --out or pass --overwrite" in again.stderr


def test_preset_files_are_checked_like_params(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: default\ntrain: {epochs: 3}\n")
    with pytest.raises(ParamsError, match=r"synthesize.preset = .*sets train; a preset may set only"):
        parse_params({"synthesize": {"preset": str(bad)}})
    with pytest.raises(ParamsError, match="neither a built-in preset"):
        parse_params({"synthesize": {"preset": "nope"}})
