import numpy as np
import pytest

from pipeline.config import SynthesizeParams
from pipeline.moire.display import subpixel_layout
from pipeline.moire.isp import demosaic, jpeg_roundtrip
from pipeline.moire.optics import camera_homography, sensor_samples_on_display
from pipeline.moire.sensor import RGGB, aperture_weights, bayer_mosaic
from pipeline.moire.simulate import sample_capture_params, simulate_capture
from pipeline.sources.procedural import render_screen_content


def _capture(seed: int, size: int = 64, **optics):
    cfg = SynthesizeParams(size=size, optics={**SynthesizeParams().optics.model_dump(), **optics})
    source = render_screen_content("document", np.random.default_rng(1))
    rng = np.random.default_rng(seed)
    capture = sample_capture_params(cfg, source.shape[:2], rng)
    return simulate_capture(source, capture, size, cfg.optics.supersample, rng), capture


def test_bayer_mosaic_follows_rggb():
    rgb = np.zeros((4, 4, 3), np.float32)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 0.1, 0.5, 0.9
    raw = bayer_mosaic(rgb)
    assert RGGB == ((0, 1), (1, 2))
    np.testing.assert_allclose(raw[0::2, 0::2], 0.1)
    np.testing.assert_allclose(raw[0::2, 1::2], 0.5)
    np.testing.assert_allclose(raw[1::2, 0::2], 0.5)
    np.testing.assert_allclose(raw[1::2, 1::2], 0.9)


def test_demosaic_restores_flat_colour():
    rgb = np.ones((8, 8, 3), np.float32) * np.array([0.8, 0.4, 0.1], np.float32)
    np.testing.assert_allclose(demosaic(bayer_mosaic(rgb))[2:6, 2:6], rgb[2:6, 2:6], atol=1e-4)


def test_subpixel_layout_places_colours_and_keeps_mean_brightness():
    u = np.array([1 / 6, 3 / 6, 5 / 6], np.float32)  # centres of the three stripes
    v = np.full(3, 0.5, np.float32)
    rgb = subpixel_layout(u, v, 0.01, "rgb_stripe", 0.8)
    assert rgb[0, 0] > 0 and rgb[0, 1] == 0 and rgb[0, 2] == 0  # R in the first third
    assert rgb[2, 2] > 0 and rgb[2, 0] == 0  # B in the last third
    bgr = subpixel_layout(u, v, 0.01, "bgr_stripe", 0.8)
    assert bgr[0, 2] > 0 and bgr[0, 0] == 0
    uu, vv = np.meshgrid(np.linspace(0, 4, 400, endpoint=False), np.linspace(0, 4, 400, endpoint=False))
    mean = subpixel_layout(uu.astype(np.float32), vv.astype(np.float32), 0.01, "rgb_stripe", 0.6).mean(axis=(0, 1))
    np.testing.assert_allclose(mean, 1.0, atol=0.02)


def test_aperture_weights_cover_only_the_sensitive_centre():
    w = aperture_weights(4, 0.5)
    np.testing.assert_allclose(w, [0, 0.5, 0.5, 0])
    np.testing.assert_allclose(aperture_weights(3, 1.0), [1 / 3] * 3)


def test_homography_maps_display_centre_to_frame_centre():
    h = camera_homography(200, 64, 1.1, 5.0, 0.1, 30.0)
    centre = h @ np.array([100.0, 100.0, 1.0])
    np.testing.assert_allclose(centre[:2] / centre[2], [32, 32], atol=1e-9)


def test_frame_sees_only_the_screen(rng):
    cfg = SynthesizeParams(size=64)
    for _ in range(50):
        capture = sample_capture_params(cfg, (512, 512), rng)
        h = camera_homography(capture.display_size, 64, capture.pitch_ratio, capture.rotation_deg,
                              capture.tilt, capture.tilt_direction_deg)
        u, v = sensor_samples_on_display(h, 64, 2)
        assert u.min() >= 0 and v.min() >= 0
        assert u.max() < capture.display_size and v.max() < capture.display_size


def test_same_seed_same_bytes_other_seed_other_bytes():
    (m1, c1), _ = _capture(3)
    (m2, c2), _ = _capture(3)
    (m3, _), _ = _capture(4)
    assert m1.tobytes() == m2.tobytes() and c1.tobytes() == c2.tobytes()
    assert m1.tobytes() != m3.tobytes()


def test_moire_is_visible_but_content_is_the_same():
    (moire, clean), _ = _capture(5, size=96, pitch_ratio=(1.05, 1.05), rotation_deg=(2.0, 2.0))
    diff = moire.astype(float) - clean.astype(float)
    psnr = 10 * np.log10(255**2 / np.mean(diff**2))
    assert 10 < psnr < 32, psnr  # visibly degraded, yet recognisably the same picture


def _shift_of_best_match(a: np.ndarray, b: np.ndarray, max_shift: int = 3) -> tuple[int, int]:
    """Integer (dy, dx) that best aligns b to a, by mean squared difference."""
    best, arg = np.inf, (0, 0)
    m = max_shift
    for dy in range(-m, m + 1):
        for dx in range(-m, m + 1):
            err = np.mean((a[m:-m, m:-m] - np.roll(b, (dy, dx), axis=(0, 1))[m:-m, m:-m]) ** 2)
            if err < best:
                best, arg = err, (dy, dx)
    return arg


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clean_target_is_pixel_aligned_with_moire(seed):
    import cv2

    (moire, clean), _ = _capture(seed, size=96)
    # Low-pass both so the moiré itself does not dominate the comparison.
    a = cv2.GaussianBlur(moire.mean(axis=2), (0, 0), 1.5)
    b = cv2.GaussianBlur(clean.mean(axis=2), (0, 0), 1.5)
    assert _shift_of_best_match(a, b) == (0, 0)


def test_jpeg_quality_changes_bytes():
    image = render_screen_content("chart", np.random.default_rng(0))[:64, :64]
    assert jpeg_roundtrip(image, 30).tobytes() != jpeg_roundtrip(image, 95).tobytes()
    assert np.abs(jpeg_roundtrip(image, 95).astype(int) - image).mean() < 6
