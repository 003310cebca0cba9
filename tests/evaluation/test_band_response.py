"""benchmarks/band_response.py: bands of the asked period, kind and contrast; a perfect restorer removes all
of them, the identity none, and a blur removes fine bands and leaves wide ones; bad options and unreadable photos
get one line, and a run scores a real model."""

import json
import math
import subprocess
import sys

import numpy as np

import pytest
import torch

from pipeline.io import write_png
from pipeline.models import build_model, model_spec, save_model
from pipeline.moire.optics import lens_blur
from tests.conftest import PROJECT, load_script


@pytest.fixture(scope="module")
def response():
    return load_script("benchmarks/band_response.py")


@pytest.fixture(scope="module")
def clean():
    generator = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 12, generator=generator), size=(96, 96),
                                             mode="bilinear", align_corners=False)[0]
    return 0.3 + 0.5 * smooth  # content wider than the bands below, away from black and white


def test_bands_have_the_asked_period_contrast_and_kind(response):
    colour = response.band_pattern(64, 64, 16.0, 0.1, "colour", angle_deg=0.0)
    luma = response.band_pattern(64, 64, 16.0, 0.1, "luma", angle_deg=0.0)
    for pattern in (colour, luma):
        assert float(pattern.mean()) == pytest.approx(1.0, abs=1e-5)
        assert float((pattern - 1).square().mean().sqrt()) == pytest.approx(0.1, rel=1e-3)
        assert torch.allclose(pattern[:, :, :48], pattern[:, :, 16:], atol=1e-5)  # repeats every 16 px along x
        assert torch.allclose(pattern[:, :1], pattern[:, 1:2])  # and not along y at 0°
    assert torch.allclose(luma[0], luma[1]) and torch.allclose(luma[0], luma[2])
    assert float(colour.mean(dim=0).sub(1).abs().max()) < 1e-5  # three phases a third apart: no grey left
    turned = response.band_pattern(64, 64, 16.0, 0.1, "luma", angle_deg=90.0)
    assert torch.allclose(turned[0].T, luma[0], atol=1e-5)


def test_a_perfect_restorer_removes_all_of_the_bands_and_the_identity_none(response, clean):
    pattern = response.band_pattern(96, 96, 12.0, 0.1, "colour")
    assert response.removed_share(lambda image: clean, clean, pattern) == 1.0
    assert response.removed_share(lambda image: image, clean, pattern) == pytest.approx(0.0, abs=1e-9)
    doubled = response.removed_share(lambda image: clean + 2 * (image - clean), clean, pattern)
    assert doubled == pytest.approx(-3.0, abs=1e-6)  # twice the bands left: four times their energy


def test_a_blur_removes_fine_bands_and_leaves_wide_ones(response, clean):
    def blur(image):
        return lens_blur(image[None], torch.tensor([2.0]))[0]

    shares = response.photo_responses(blur, clean, [4.0, 48.0], amplitude=0.1, angle_deg=30.0)
    for kind in response.KINDS:
        fine, wide = shares[kind][4.0], shares[kind][48.0]
        assert fine > 0.95  # a Gaussian of σ = 2 px keeps exp(−2π²σ²/P²) of a 4-px band: none
        assert wide == pytest.approx(1 - math.exp(-2 * math.pi**2 * 4 / 48**2) ** 2, abs=0.05)


def test_centre_crop_and_photo_listing(response, tmp_path):
    image = torch.arange(3 * 10 * 20, dtype=torch.float32).reshape(3, 10, 20)
    assert torch.equal(response.centre_crop(image, 4), image[:, 3:7, 8:12])
    assert response.centre_crop(image, 50).shape == (3, 10, 20) and response.centre_crop(image, None) is image
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "a.JPG").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "c.webp").write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in response.clean_photos(tmp_path)] == ["a.JPG", "b.png",
                                                                                              "more/c.webp"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no images"):
        response.clean_photos(tmp_path / "empty")


def _run(*args):
    return subprocess.run([sys.executable, str(PROJECT / "benchmarks/band_response.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_a_run_scores_a_model_skips_an_unreadable_photo_and_refuses_bad_options(tmp_path):
    spec = model_spec("unet", 8, 2, "chroma", 8.0)
    save_model(build_model(spec, seed=0), spec, tmp_path / "model")
    photos = tmp_path / "photos"
    rng = np.random.default_rng(0)
    write_png(photos / "a.png", rng.integers(40, 200, (40, 56, 3), dtype=np.uint8))
    (photos / "broken.png").write_bytes(b"not a png")

    done = _run("--model", tmp_path / "model", "--clean", photos, "--periods", 8, 16, "--out", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    assert "skipped 1 unreadable photo(s): broken.png" in done.stderr
    assert "median of 1 photos" in done.stdout and "| colour |" in done.stdout and "| luma |" in done.stdout
    figures = json.loads((tmp_path / "r.json").read_text())["models"][str(tmp_path / "model")]
    assert set(figures) == {"a.png"} and set(figures["a.png"]) == {"colour", "luma"}
    assert all(-10 < share <= 1 for kind in figures["a.png"].values() for share in kind.values())

    for args, message in ((["--amplitude", 0.9], "--amplitude 0.9: must lie in (0, 0.707]"),
                          (["--periods", 8, 0], "--periods [8.0, 0.0]: each must be > 0 pixels"),
                          (["--crop", -1], "--crop -1: must be ≥ 0")):
        refused = _run("--model", tmp_path / "model", "--clean", photos, *args)
        assert refused.returncode == 2 and message in refused.stderr
    missing = _run("--model", tmp_path / "nowhere", "--clean", photos)
    assert missing.returncode == 1 and f"--model {tmp_path / 'nowhere'}: no model in" in missing.stderr
