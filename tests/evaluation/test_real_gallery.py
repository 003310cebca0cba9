"""benchmarks/real_gallery.py: one row per photo with a column per restoration, the --max-side columns restored
as `demoire predict --max-side` restores; the band shares it prints; unreadable and too small photos skipped and
named; bad options refused in one line."""

import subprocess
import sys

import numpy as np

from pipeline.inference import restore_image
from pipeline.io import read_rgb, write_png
from pipeline.models import build_model, model_spec, save_model
from tests.conftest import PROJECT, load_script


def _run(*args):
    return subprocess.run([sys.executable, str(PROJECT / "benchmarks/real_gallery.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def _striped(height: int, width: int) -> np.ndarray:
    """Colour stripes of 40 px over noise: bands the crop finder looks for."""
    y, x = np.mgrid[:height, :width]
    phase = 2 * np.pi * (x + 0.5 * y) / 40
    stripes = np.stack([np.cos(phase + k * 2 * np.pi / 3) for k in range(3)], axis=-1)
    noise = np.random.default_rng(0).normal(0, 4, (height, width, 3))
    return np.clip(128 + 40 * stripes + noise, 0, 255).astype(np.uint8)


def test_the_shrunk_column_is_the_predicted_photo_cut_at_the_crop():
    gallery = load_script("benchmarks/real_gallery.py")
    spec = model_spec("unet", 8, 2, "chroma", 8.0)
    model = build_model(spec, seed=0).eval()
    image = _striped(120, 200)
    cut = gallery.shrunk_crop(model, image, 10, 30, 64, max_side=100)
    np.testing.assert_array_equal(cut, restore_image(model, image, "cpu", max_side=100)[10:74, 30:94])
    shares = gallery.band_shares(image[:64, :64], image[:64, :64])
    assert shares == {"colour bands": 1.0, "luma bands": 1.0, "luma texture": 1.0}


def test_a_run_writes_one_row_per_photo_skips_unreadable_and_small_ones_and_refuses_bad_options(tmp_path):
    spec = model_spec("unet", 8, 2, "chroma", 8.0)
    save_model(build_model(spec, seed=0), spec, tmp_path / "model")
    write_png(tmp_path / "a.png", _striped(120, 200))
    write_png(tmp_path / "small.png", _striped(40, 40))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "gallery.jpg"

    done = _run("--model", tmp_path / "model", "--out", out, "--crop", 64, "--margin", 16, "--max-side", 100,
                "--max-side", 64, tmp_path / "a.png", tmp_path / "small.png", tmp_path / "broken.png")
    assert done.returncode == 1, done.stderr  # written, without the photos it skipped
    assert read_rgb(out).shape == (64, 4 * 64, 3)  # input | full size | --max-side 100 | --max-side 64
    assert "skipped 2 photo(s)" in done.stderr and "40x40, smaller than --crop 64" in done.stderr
    assert str(tmp_path / "broken.png") in done.stderr
    line = next(text for text in done.stdout.splitlines() if text.startswith("a.png"))
    assert "full size: colour bands" in line and "--max-side 100: colour bands" in line and "--max-side 64:" in line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.png", "broken.png", "gallery.jpg", "model",
                                                                 "small.png"]  # no temporary file left

    for args, message in ((["--crop", 8], "--crop 8: must be ≥ 16 pixels"),
                          (["--max-side", 32], "--max-side 32: must be ≥ 64 pixels"),
                          (["--margin", -1], "--margin -1: must be ≥ 0")):
        refused = _run("--model", tmp_path / "model", "--out", tmp_path / "x.jpg", *args, tmp_path / "a.png")
        assert refused.returncode == 2 and message in refused.stderr and not (tmp_path / "x.jpg").exists()
    missing = _run("--model", tmp_path / "nowhere", "--out", tmp_path / "x.jpg", tmp_path / "a.png")
    assert missing.returncode == 2 and f"error: --model {tmp_path / 'nowhere'}: no model in" in missing.stderr
