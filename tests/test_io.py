import stat

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import InputDataError
from pipeline.io import DIR_MODE, FILE_MODE, atomic_dir, atomic_path, read_rgb, write_json, write_png


def test_atomic_outputs_get_ordinary_permissions_not_owner_only(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    write_png(tmp_path / "b.png", np.zeros((4, 4, 3), np.uint8))
    with atomic_dir(tmp_path / "folder") as staging:
        (staging / "c.txt").write_text("c")
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == FILE_MODE
    assert stat.S_IMODE((tmp_path / "b.png").stat().st_mode) == FILE_MODE
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == DIR_MODE


def test_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "dir") as staging:
            (staging / "x").write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def _truncated_png(path, rng, height=40, width=60):
    """A PNG cut off halfway through its pixel data; the header still declares the full size."""
    write_png(path, rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_truncated_and_corrupt_images_are_input_errors(tmp_path, rng):
    truncated = _truncated_png(tmp_path / "cut.png", rng)
    with pytest.raises(InputDataError, match=r"cannot read image .*cut\.png: image file is truncated"):
        read_rgb(truncated)
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputDataError, match=r"cannot read image .*junk\.png"):
        read_rgb(tmp_path / "junk.png")


def test_images_over_the_pixel_limit_are_refused_from_the_header(tmp_path, rng):
    # Truncated, so decoding would fail: the size message proves the header alone was checked.
    path = _truncated_png(tmp_path / "big.png", rng)
    with pytest.raises(InputDataError) as info:
        read_rgb(path, max_pixels=2399)
    assert str(info.value) == f"image {path} is 60x40 = 2,400 pixels, over the limit of 2,399 (infer.max_pixels)"
    write_png(tmp_path / "ok.png", np.zeros((40, 60, 3), np.uint8))
    assert read_rgb(tmp_path / "ok.png", max_pixels=2400).shape == (40, 60, 3)


@pytest.mark.parametrize("pil_limit", [2000, 1000])  # PIL warns above its limit and raises above twice it
def test_pil_decompression_bomb_warning_and_error_become_the_same_input_error(tmp_path, monkeypatch, pil_limit):
    write_png(tmp_path / "bomb.png", np.zeros((40, 60, 3), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pil_limit)
    with pytest.raises(InputDataError) as info:
        read_rgb(tmp_path / "bomb.png")
    assert str(info.value) == (f"image {tmp_path / 'bomb.png'} is 2,400 pixels, "
                               f"over the decompression-bomb limit of {pil_limit:,}")


def test_json_outputs_write_null_for_nan_and_infinity(tmp_path):
    import json
    import math

    from pipeline.io import json_text, write_json

    data = {"psnr": math.inf, "moire_removed_low": math.nan, "real": {"a": {"ssim": 0.5, "x": [-math.inf, 1]}}}
    write_json(tmp_path / "m.json", data)
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"psnr": None, "moire_removed_low": None, "real": {"a": {"ssim": 0.5, "x": [None, 1]}}}
    assert json_text({"a": math.nan}) == '{"a": null}'
