"""benchmarks/crop_pairs.py: five crops of the same place in both images of each pair, small and unreadable pairs
named and skipped, a used output folder refused."""

import subprocess
import sys

import numpy as np

from pipeline.io import read_rgb, write_png
from tests.conftest import PROJECT


def _run(*args):
    return subprocess.run([sys.executable, str(PROJECT / "benchmarks" / "crop_pairs.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def _image(height: int, width: int, offset: int) -> np.ndarray:
    """Each pixel's row and column in its red and green, `offset` in its blue: where a crop came from shows."""
    y, x = np.mgrid[:height, :width]
    return np.stack([y, x, np.full_like(y, offset)], axis=2).astype(np.uint8)


def test_five_crops_of_the_same_place_small_and_unreadable_pairs_skipped(tmp_path):
    pairs = tmp_path / "pairs"
    for name, (height, width) in {"big.png": (40, 60), "small.png": (20, 60)}.items():
        write_png(pairs / "moire" / name, _image(height, width, 1))
        write_png(pairs / "clean" / name, _image(height, width, 2))
    (pairs / "moire" / "broken.png").write_bytes(b"not a png")
    (pairs / "clean" / "broken.png").write_bytes(b"not a png")

    done = _run(pairs, "--size", 30, "--out", tmp_path / "crops")

    assert done.returncode == 1, done.stderr  # done, with pairs skipped
    assert done.stdout.strip() == f"5 crops of 1 pair in {tmp_path / 'crops'} (2 skipped)"
    assert "skipped small.png: 60×20 is smaller than 30" in done.stderr and "skipped broken.png" in done.stderr
    corners = {"tl": (0, 0), "tr": (0, 30), "bl": (10, 0), "br": (10, 30), "c": (5, 15)}
    for place, (top, left) in corners.items():
        moire = read_rgb(tmp_path / "crops" / "moire" / f"big_{place}.png")
        clean = read_rgb(tmp_path / "crops" / "clean" / f"big_{place}.png")
        assert moire.shape == clean.shape == (30, 30, 3)
        assert (moire[0, 0, 0], moire[0, 0, 1], moire[0, 0, 2]) == (top, left, 1)
        assert (clean[0, 0, 0], clean[0, 0, 1], clean[0, 0, 2]) == (top, left, 2)
    assert sorted(p.name for p in (tmp_path / "crops" / "moire").iterdir()) == sorted(f"big_{p}.png" for p in corners)

    again = _run(pairs, "--size", 30, "--out", tmp_path / "crops")
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"error: --out {tmp_path / 'crops'} is not empty; name a new or empty folder"]
    too_large = _run(pairs, "--size", 41, "--out", tmp_path / "none")
    assert too_large.returncode == 2 and too_large.stderr.strip().splitlines()[-1] == (
        f"error: no pair of {pairs} is at least 41 px on each side: nothing written")
    assert not (tmp_path / "none").exists()
