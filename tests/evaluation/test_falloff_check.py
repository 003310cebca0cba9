"""benchmarks/falloff_check.py: the gain of undoing a photo's falloff against a truth without one, per group; the
cost on images without falloff; benchmarks/falloff_gallery.py: a row per photo; unreadable images skipped and
named; bad options refused in one line."""

import json
import subprocess
import sys

import numpy as np

from pipeline.io import write_png
from tests.conftest import PROJECT


def _run(*args, script: str = "falloff_check.py"):
    return subprocess.run([sys.executable, str(PROJECT / "benchmarks" / script), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def _page(height: int = 120, width: int = 200) -> np.ndarray:
    """Lines of 'text' on a light page."""
    y, _ = np.mgrid[:height, :width]
    return np.repeat(np.where((y // 8) % 3 == 0, 40, 220).astype(np.uint8)[..., None], 3, axis=2)


def _darkened(page: np.ndarray) -> np.ndarray:
    """`page` 35 % darker in its corners than in its centre: a screen's falloff."""
    height, width = page.shape[:2]
    y, x = np.mgrid[:height, :width]
    r2 = ((x - width / 2) ** 2 + (y - height / 2) ** 2) / ((width / 2) ** 2 + (height / 2) ** 2)
    return np.clip(page * (1 - 0.35 * r2)[..., None], 0, 255).astype(np.uint8)


def test_gain_where_photos_fall_off_cost_where_they_do_not_and_unreadable_images_named(tmp_path):
    page = _page()
    for name in ("a_1.png", "b_1.png"):
        write_png(tmp_path / "pairs" / "clean" / name, page)
        write_png(tmp_path / "pairs" / "moire" / name, _darkened(page))
    write_png(tmp_path / "flat" / "page.png", page)
    (tmp_path / "flat" / "broken.png").write_bytes(b"not a png")
    done = _run("--paired", tmp_path / "pairs", "--group", "a=a_*", "--group", "b=b_*", "--clean", tmp_path / "flat",
                "--strength", "0", "0.5", "1", "--out", tmp_path / "out.json")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    for group in ("a", "b"):
        gains = result["gain"][group]
        assert gains["0"]["mean"] == [0.0, 0.0] and gains["0"]["count"] == 1
        assert 0 < gains["0.5"]["mean"][1] < gains["1"]["mean"][1]  # tone-aligned: more of the field, more gain
        assert result["gain"][group]["fields"][0]["curvature"] < -0.2
    assert result["cost"]["flat"]["0.5"]["count"] == 1 and -0.05 < result["cost"]["flat"]["0.5"]["mean"] <= 0
    assert "skipped 1 unreadable images of flat: broken.png" in done.stderr
    assert "gain           a (n=1) strength 0.5" in done.stdout


def test_bad_options_are_refused_in_one_line(tmp_path):
    none = _run("--strength", "0.5")
    assert none.returncode == 2 and "give --paired, --clean or --sources" in none.stderr
    big = _run("--clean", tmp_path, "--strength", "1.5")
    assert big.returncode == 2 and "--strength [1.5]: each must be within 0 … 1 (as infer.falloff)" in big.stderr
    write_png(tmp_path / "pairs" / "clean" / "a.png", _page())
    write_png(tmp_path / "pairs" / "moire" / "a.png", _page())
    empty = _run("--paired", tmp_path / "pairs", "--group", "x=zzz*")
    assert empty.returncode != 0 and "zzz" in empty.stderr and "Traceback" not in empty.stderr


def test_the_gallery_shows_each_photo_with_its_falloff_undone_and_its_field(tmp_path):
    from pipeline.falloff import estimate_falloff, undo_falloff
    from pipeline.io import read_rgb

    photo = _darkened(_page(160, 240))
    write_png(tmp_path / "a.png", photo)
    (tmp_path / "b.png").write_bytes(b"not a png")
    done = _run("--out", tmp_path / "g.jpg", "--width", "120", "--strength", "1", tmp_path / "a.png",
                tmp_path / "b.png", script="falloff_gallery.py")
    assert done.returncode == 1, done.stderr  # written, without the photo it skipped
    assert "a.png: a -0." in done.stdout and "wrote" in done.stdout and "skipped" in done.stderr
    gallery = read_rgb(tmp_path / "g.jpg")
    assert gallery.shape == (80, 360, 3)  # one row: three columns of 120 x 80
    undone = undo_falloff(photo, estimate_falloff(photo), 1.0)
    # the bottom-left corner (the caption is at the top) is brighter in the middle column: the falloff undone
    input_corner, undone_corner = gallery[-8:, :8, 1].mean(), gallery[-8:, 120:128, 1].mean()
    assert input_corner + 10 < undone_corner
    assert undone[-20:, :20, 1].mean() > photo[-20:, :20, 1].mean() + 10
    bad = _run("--out", tmp_path / "x.jpg", "--strength", "2", tmp_path / "a.png", script="falloff_gallery.py")
    assert bad.returncode == 2 and "--strength 2.0: must be within 0 … 1" in bad.stderr
    none = _run("--out", tmp_path / "y.jpg", tmp_path / "b.png", script="falloff_gallery.py")
    assert none.returncode == 2 and "error: no readable photo: nothing written" in none.stderr and not (tmp_path / "y.jpg").exists()
