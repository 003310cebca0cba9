"""benchmarks/real_residuals.py: the falloff its light-field fit reports is the one a photo was given, its split
puts colour stripes in the chroma and a wide ramp in the luma, and its shift tolerance forgives misregistration, not
moiré on flat content."""

import subprocess
import sys

import pytest
import torch

from tests.conftest import PROJECT, load_script


@pytest.fixture(scope="module")
def residuals():
    return load_script("benchmarks/real_residuals.py")


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


def test_the_split_finds_fine_colour_stripes_in_the_chroma_and_a_wide_ramp_in_the_luma(residuals):
    generator = torch.Generator().manual_seed(1)
    truth = 0.2 + 0.6 * torch.rand(3, 64, 96, generator=generator, dtype=torch.float64)
    x = torch.arange(96, dtype=torch.float64)
    stripes = 0.05 * torch.sin(2 * torch.pi * x / 6) * torch.tensor([1.0, -1.0, 0.0])[:, None, None]  # no luma
    ramp = 0.1 * x / 96  # the same in every channel: luma only, wider than any σ below
    photo = (truth + stripes + ramp).clamp(0, 1)

    gains = residuals.split_gains(residuals.align_tone(photo, truth), truth, [16.0])
    assert gains["chroma_all_db"] > 2 and gains["luma_all_db"] > 2  # each about half the error
    assert gains["chroma_finer_16_db"] == pytest.approx(gains["chroma_all_db"], abs=0.3)  # stripes of 6 px: all fine
    # the ramp is wide: only its ends (where the blur repeats the edge) are finer than σ = 16
    assert gains["luma_finer_16_db"] < gains["luma_all_db"] / 4


def test_the_spatial_spread_of_moire_that_fades_across_the_frame_is_larger_than_of_even_moire(residuals):
    x = torch.arange(256, dtype=torch.float64)
    truth = (0.3 + 0.4 * x / 255)[None, None, :].expand(3, 256, 256)  # a ramp: flat to the band-pass, not to tone
    stripes = 0.05 * torch.sin(2 * torch.pi * x[:, None] / 8) * torch.tensor([1.0, -1.0, 0.0])[:, None, None]
    even, fading = truth + stripes, truth + stripes * torch.linspace(1.0, 0.05, 256, dtype=torch.float64)[None, :]
    generator = torch.Generator().manual_seed(2)
    noise = 0.002 * torch.randn(3, 256, 256, generator=generator, dtype=torch.float64)  # a floor, as a photo has

    def spread(photo):
        return residuals.spatial_spread(residuals.align_tone(photo + noise, truth), truth, 32)

    assert spread(even)["chroma_spread"] < 1.5
    assert spread(fading)["chroma_spread"] > 2 * spread(even)["chroma_spread"]
    windows = residuals.windowed_spread(residuals.align_tone(fading + noise, truth), truth, 32, 128)
    assert spread(even)["chroma_spread"] < windows["chroma_spread"] < spread(fading)["chroma_spread"]  # part of the fade


def test_a_shift_tolerance_forgives_a_photo_a_pixel_off_and_not_stripes_on_flat_content(residuals):
    generator = torch.Generator().manual_seed(3)
    truth = torch.rand(3, 40, 60, generator=generator, dtype=torch.float64)
    off = torch.roll(truth, shifts=(1, -1), dims=(1, 2))  # the same content, a pixel down and left
    assert residuals.shift_tolerant_mse(off, truth, 0) == pytest.approx(residuals.mse(off, truth))
    assert residuals.mse(off, truth) > 0.05
    assert residuals.shift_tolerant_mse(off, truth, 1) < 1e-20  # within ±1 px every inner pixel finds itself

    flat = torch.full((3, 40, 60), 0.5, dtype=torch.float64)
    x = torch.arange(60, dtype=torch.float64)
    striped = flat + 0.05 * torch.sin(2 * torch.pi * x / 6) * torch.tensor([1.0, -1.0, 0.0])[:, None, None]
    inner = residuals.mse(striped[:, 2:-2, 2:-2], flat[:, 2:-2, 2:-2])
    assert residuals.shift_tolerant_mse(striped, flat, 2) == pytest.approx(inner)  # a flat truth has nothing to shift


def test_a_negative_shift_is_refused_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(PROJECT / "benchmarks/real_residuals.py"), str(tmp_path), "--shift", "1",
                           "-2"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--shift [1, -2]: each radius must be ≥ 0 pixels" in done.stderr
