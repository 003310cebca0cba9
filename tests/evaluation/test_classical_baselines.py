"""benchmarks/classical_baselines.py: the guided filter smooths colour texture the luma does not carry and keeps
colour edges the luma shares; the scores are gains over the untouched input."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import load_script


@pytest.fixture(scope="module")
def baselines():
    return load_script("benchmarks/classical_baselines.py")


def test_colour_stripes_on_flat_luma_are_smoothed_and_a_colour_edge_on_a_luma_edge_is_kept(baselines):
    x = np.arange(96)
    grey = np.full((64, 96, 3), 128.0)
    stripes = grey + 20.0 * np.sin(2 * np.pi * x / 6)[None, :, None] * np.array([1.0, -0.5, -1.0])  # colour, little luma
    striped = np.clip(stripes, 0, 255).astype(np.uint8)
    filtered = baselines.apply_filter("guided:4:0.001", striped)
    assert np.abs(baselines.to_ycbcr(filtered)[..., 1:]).std() < 0.2 * np.abs(baselines.to_ycbcr(striped)[..., 1:]).std()

    edge = np.where(x[None, :, None] < 48, np.array([200.0, 40.0, 40.0]), np.array([30.0, 30.0, 160.0]))
    edge = np.broadcast_to(edge, (64, 96, 3)).astype(np.uint8)  # red to dark blue: luma and colour change together
    kept = np.abs(baselines.apply_filter("guided:4:0.001", edge).astype(int) - edge)
    blurred = np.abs(baselines.apply_filter("chroma_blur:4", edge).astype(int) - edge)  # bleeds colour across it
    assert kept.mean() < 1.0 and kept.max() <= 16  # a faint halo at the edge only
    assert blurred.mean() > 3 * kept.mean() and blurred.max() > 4 * kept.max()


def test_scores_are_gains_over_the_input_and_a_filter_that_removes_colour_moire_gains(baselines, tmp_path: Path):
    rng = np.random.default_rng(0)
    for folder in ("moire", "clean"):
        (tmp_path / folder).mkdir()
    x = np.arange(64)
    luma = np.cumsum(rng.normal(0, 4, (48, 64)), axis=1) + 110  # a photo's colour follows its luma's edges
    truth = np.clip(luma[..., None] * np.array([1.1, 1.0, 0.8]), 0, 255)
    moire = truth + 15.0 * np.sin(2 * np.pi * x / 5)[None, :, None] * np.array([1.0, -0.5, -1.0])
    for folder, image in (("clean", truth), ("moire", moire)):
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(tmp_path / folder / "a.png")
    pairs = baselines.find_paired_folder(tmp_path).pairs
    table = baselines.group_table(pairs, ["guided:4:0.001", "chroma_blur:1"])
    assert table["guided:4:0.001"]["psnr_gain"] > 3
    assert table["guided:4:0.001"]["tone_psnr_gain"] > 1
    assert table["guided:4:0.001"]["psnr_gain"] > table["chroma_blur:1"]["psnr_gain"]


def test_an_unknown_filter_names_itself(baselines):
    with pytest.raises(SystemExit, match="'sharpen:1'"):
        baselines.apply_filter("sharpen:1", np.zeros((8, 8, 3), np.uint8))
