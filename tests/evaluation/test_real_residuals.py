"""benchmarks/real_residuals.py's light-field fit: the falloff it reports is the one a photo was given."""

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def residuals():
    spec = importlib.util.spec_from_file_location("real_residuals", ROOT / "benchmarks" / "real_residuals.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_photo_darkened_towards_its_corners_reports_that_falloff_and_a_flat_field_undoes_it(residuals):
    generator = torch.Generator().manual_seed(0)
    truth = 0.2 + 0.6 * torch.rand(3, 48, 80, generator=generator, dtype=torch.float64)
    r2 = residuals.corner_distance_sq(48, 80)[0]
    assert float(r2.max()) == pytest.approx(1.0) and float(r2.min()) < 0.01
    photo = truth * (1 - 0.1 * r2)

    lit, falloff = residuals.light_field_fit(photo, truth)
    assert falloff == pytest.approx(0.1, rel=0.1)  # the bowl 1 + k·r² that best fits 1 / (1 − 0.1·r²)
    assert residuals.mse(lit, truth) < residuals.mse(residuals.align_tone(photo, truth), truth) / 10

    fielded = residuals.flat_fielded(photo, 0.1)
    assert float(fielded.mean()) == pytest.approx(float(photo.mean()), abs=0.01)  # the mean brightness stays
    tone_gain = residuals.gain_db(residuals.mse(residuals.align_tone(photo, truth), truth),
                                  residuals.mse(residuals.align_tone(fielded, truth), truth))
    assert tone_gain > 10  # only 8-bit rounding is left
    assert residuals.mse(residuals.flat_fielded(truth, 0.1), truth) > 1e-4  # and a flat photo is harmed by it
