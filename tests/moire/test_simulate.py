from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline.config import SynthesizeParams, deep_merge, parse_params
from pipeline.moire.display import add_glare, box_coverage, panel_colour, subpixel_coverage
from pipeline.moire.isp import demosaic, sharpen, white_balance
from pipeline.moire.jpeg import jpeg_compress, quantisation_tables
from pipeline.moire.optics import (
    camera_homography, lens_blur, pitch_ratio, sensor_samples_on_display, vignetting,
)
from pipeline.moire.presets import PRESETS
from pipeline.moire.sensor import RGGB, add_sensor_noise, aperture_offsets, bayer_mosaic
from pipeline.moire.simulate import (
    content_batch, display_size, exposure_gain, pitch_ratio_bounds, sample_capture_params, simulate_batch, simulate_capture,
)
from pipeline.sources.procedural import render_screen_content


def _capture(seed: int, size: int = 64, preset: str = "classic", **synthesize):
    """One capture of a document screen; on the `classic` preset, so a test's explicit physics is all that moves."""
    cfg = parse_params({"synthesize": {"size": size, "preset": preset, **synthesize}}).synthesize
    source = render_screen_content("document", np.random.default_rng(1))
    capture = sample_capture_params(cfg, source.shape[:2], np.random.default_rng(seed))
    return simulate_capture(source, capture, size, cfg.optics.supersample), capture


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


def _image(*rgb: float, size: int = 8) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).reshape(1, 3, 1, 1).expand(1, 3, size, size).clone()


# --- display ---------------------------------------------------------------------------------

def test_box_coverage_is_the_exact_lit_fraction():
    x = torch.tensor([0.35, 0.5, 0.9])
    # Pattern lit on [0.2, 0.5) of each unit; a box of width 0.2 centred at x.
    got = box_coverage(x, torch.tensor(0.2), torch.tensor(0.2), torch.tensor(0.3))
    torch.testing.assert_close(got, torch.tensor([1.0, 0.5, 0.0]))


@pytest.mark.parametrize("layout", ["rgb_stripe", "bgr_stripe", "pentile"])
def test_every_layout_keeps_each_channels_mean_at_one(layout):
    grid = torch.linspace(0, 8, 801)[:-1]
    v, u = torch.meshgrid(grid, grid, indexing="ij")
    coverage = subpixel_coverage(u[None], v[None], torch.tensor([0.01]), layout, torch.tensor([0.7]))
    torch.testing.assert_close(coverage.mean(dim=(0, 2, 3)), torch.ones(3), atol=0.02, rtol=0)


def test_stripe_layouts_place_red_and_blue_on_opposite_sides():
    u = torch.tensor([[[1 / 6, 3 / 6, 5 / 6]]])
    v = torch.full_like(u, 0.5)
    rgb = subpixel_coverage(u, v, torch.tensor([0.01]), "rgb_stripe", torch.tensor([0.8]))[0, :, 0]
    bgr = subpixel_coverage(u, v, torch.tensor([0.01]), "bgr_stripe", torch.tensor([0.8]))[0, :, 0]
    assert rgb[0, 0] > 0 and rgb[0, 2] == 0 and rgb[2, 2] > 0 and rgb[2, 0] == 0
    assert bgr[2, 0] > 0 and bgr[0, 0] == 0


def test_pentile_alternates_red_and_blue_in_a_checkerboard_around_centred_green():
    u = torch.tensor([[[0.25, 1.25, 0.75, 0.25]]])  # pixel (0,0) left, (1,0) left, (0,1) right, (0,1) left
    v = torch.tensor([[[0.5, 0.5, 1.5, 1.5]]])
    cov = subpixel_coverage(u, v, torch.tensor([0.01]), "pentile", torch.tensor([0.9]))[0, :, 0]
    assert cov[0, 0] > 0 and cov[2, 0] == 0 and cov[1, 0] == 0  # even row: red left in an even pixel
    assert cov[2, 1] > 0 and cov[0, 1] == 0  # blue in the odd pixel next to it
    assert cov[2, 2] > 0 and cov[1, 2] == 0 and cov[1, 3] > 0  # odd row: green moves to the left
    grid = torch.linspace(0, 8, 801)[:-1]
    vv, uu = torch.meshgrid(grid, grid, indexing="ij")
    green = subpixel_coverage(uu[None], vv[None], torch.tensor([0.01]), "pentile", torch.tensor([0.9]))[0, 1]
    centroid = float((green * (uu % 1)).sum() / green.sum())
    assert centroid == pytest.approx(0.5, abs=0.01)  # no systematic shift against the clean target


def test_panel_colour_applies_black_level_white_point_and_gamut():
    grey = _image(0.5, 0.5, 0.5)
    one = torch.ones(1)
    out = panel_colour(grey, one, torch.tensor([[1.1, 1.0, 0.9]]), torch.tensor([0.8]))
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.44, 0.4, 0.36]))
    black = add_glare(panel_colour(_image(0, 0, 0), one, torch.ones(1, 3), one), torch.tensor([0.02]))
    torch.testing.assert_close(black[0, :, 0, 0], torch.full((3,), 0.02))
    red = _image(0.6, 0.2, 0.2)
    desaturated = panel_colour(red, torch.tensor([0.5]), torch.ones(1, 3), one)
    assert desaturated[0, 0, 0, 0] < 0.6 and desaturated[0, 1, 0, 0] > 0.2


# --- optics ----------------------------------------------------------------------------------

def test_pitch_ratio_follows_the_thin_lens_magnification():
    # 0.27 mm pixels, 4.5 mm lens at 454.5 mm: magnification 0.01 → 2.7 µm on 2.7 µm pixels.
    assert pitch_ratio(0.27, 454.5, 4.5, 2.7) == pytest.approx(1.0)
    assert pitch_ratio(0.27, 904.5, 4.5, 2.7) == pytest.approx(0.5)


def test_homography_maps_display_centre_to_frame_centre():
    h = camera_homography(200, 64, 1.1, 5.0, 0.1, 30.0)
    centre = h @ np.array([100.0, 100.0, 1.0])
    np.testing.assert_allclose(centre[:2] / centre[2], [32, 32], atol=1e-9)


def test_radial_distortion_bends_straight_rows():
    h = torch.tensor(camera_homography(64, 64, 1.0, 0.0, 0.0, 0.0))[None]
    _, v_straight = sensor_samples_on_display(h, 64, 1, torch.zeros(1), torch.ones(1))
    _, v_bent = sensor_samples_on_display(h, 64, 1, torch.tensor([0.1]), torch.ones(1))
    row = 5  # a row near the top: k1 > 0 samples its ends further up than its middle
    assert torch.allclose(v_straight[0, row], v_straight[0, row, 32].expand(64))
    assert v_bent[0, row, 0] < v_bent[0, row, 32]
    torch.testing.assert_close(v_bent[0, 32, 32], v_straight[0, 32, 32], atol=0.05, rtol=0)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("extreme", [{}, {"tilt": [0.3, 0.3], "radial_distortion": [0.3, 0.3], "rotation_deg": [45, 45]}])
def test_frame_sees_only_the_screen_even_at_the_extremes(preset, extreme):
    cfg = parse_params({"synthesize": {"size": 48, "preset": preset, "optics": extreme}}).synthesize
    n = display_size(cfg)
    worst_pitch = pitch_ratio_bounds(cfg)[0]
    for direction in range(0, 360, 15):  # diagonal tilt is the worst case
        o = cfg.optics
        h = torch.tensor(camera_homography(n, 48, worst_pitch, o.rotation_deg[1], o.tilt[1], float(direction)))
        u, v = sensor_samples_on_display(h[None], 48, 2, torch.tensor([o.radial_distortion[1]]), torch.ones(1))
        assert u.min() >= 0 and v.min() >= 0 and u.max() < n and v.max() < n, direction


def test_vignetting_darkens_corners_only():
    falloff = vignetting(16, 1, torch.tensor([0.3]))[0, 0]
    corner = (15.5 - 8) / 8  # centre of the corner pixel, in half-frame units
    assert falloff[8, 8] > 0.99 and falloff[0, 0] == pytest.approx(1 - 0.3 * corner**2)


def test_lens_blur_keeps_mean_and_lowers_contrast():
    stripes = torch.zeros(1, 1, 16, 16)
    stripes[..., ::2] = 1.0
    blurred = lens_blur(stripes, torch.tensor([1.0]))
    assert blurred.mean() == pytest.approx(0.5, abs=1e-4) and blurred.std() < 0.1 * stripes.std()
    assert torch.equal(lens_blur(stripes, torch.tensor([0.0])), stripes)


# --- sensor ----------------------------------------------------------------------------------

def test_bayer_mosaic_follows_rggb():
    raw = bayer_mosaic(_image(0.1, 0.5, 0.9, size=4))[0, 0]
    assert RGGB == ((0, 1), (1, 2))
    torch.testing.assert_close(raw[0::2, 0::2], torch.full((2, 2), 0.1))
    torch.testing.assert_close(raw[0::2, 1::2], torch.full((2, 2), 0.5))
    torch.testing.assert_close(raw[1::2, 0::2], torch.full((2, 2), 0.5))
    torch.testing.assert_close(raw[1::2, 1::2], torch.full((2, 2), 0.9))


def test_sub_samples_spread_over_the_sensitive_part_of_the_pixel():
    torch.testing.assert_close(aperture_offsets(2, torch.tensor([1.0, 0.5])),
                               torch.tensor([[-0.25, 0.25], [-0.125, 0.125]], dtype=torch.float64))
    torch.testing.assert_close(aperture_offsets(1, torch.tensor([0.5])), torch.zeros(1, 1, dtype=torch.float64))


def test_a_narrower_aperture_lets_more_moire_through_at_the_default_supersampling():
    fixed = {"distance_mm": [405, 405], "rotation_deg": [3, 3], "blur_sigma": [0.2, 0.2]}
    (narrow, clean), _ = _capture(5, size=64, optics=fixed, sensor={"aperture": [0.3, 0.3]})
    (wide, _), _ = _capture(5, size=64, optics=fixed, sensor={"aperture": [1.0, 1.0]})
    assert _psnr(narrow, clean) < _psnr(wide, clean) - 0.5


def test_a_fixed_exposure_is_in_stops():
    light = torch.full((2, 3, 4, 4), 0.4)
    fixed = {"exposure_ev": torch.tensor([-1.0, 0.5]), "auto_exposure": torch.zeros(2)}
    torch.testing.assert_close(exposure_gain(light, light, fixed), torch.tensor([0.5, 2**0.5]))


def test_noise_grows_with_signal_and_is_seeded():
    flat = torch.cat([torch.full((1, 1, 64, 64), 0.1), torch.full((1, 1, 64, 64), 0.8)])
    a = add_sensor_noise(flat, torch.full((2,), 0.01), torch.full((2,), 0.001), [1, 2])
    b = add_sensor_noise(flat[1:], torch.full((1,), 0.01), torch.full((1,), 0.001), [2])
    assert torch.equal(a[1:], b)  # a capture's noise comes from its own seed, not its batch
    assert a[1].std() > 2 * a[0].std()


# --- ISP -------------------------------------------------------------------------------------

def test_demosaic_restores_flat_colour():
    rgb = _image(0.8, 0.4, 0.1)
    torch.testing.assert_close(demosaic(bayer_mosaic(rgb)), rgb)


def _malvar_he_cutler(raw: torch.Tensor) -> torch.Tensor:
    """The paper's four 5×5 filters (in eighths) over the reflected mosaic, each pixel taking its colours' ones."""
    green = [[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]]
    row = [[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, 0.5, 0, 0]]
    diagonal = [[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]]
    kernels = torch.tensor([green, row, [list(c) for c in zip(*row)], diagonal], dtype=raw.dtype)[:, None] / 8
    g, r, c, d = torch.nn.functional.conv2d(torch.nn.functional.pad(raw, (2, 2, 2, 2), mode="reflect"), kernels).unbind(1)
    m = raw[:, 0]
    rgb = torch.empty(raw.shape[0], 3, *raw.shape[2:], dtype=raw.dtype)
    for channel, estimates in ((0, (m, r, c, d)), (1, (g, m, m, g)), (2, (d, c, r, m))):  # RGGB
        for (dy, dx), estimate in zip(((0, 0), (0, 1), (1, 0), (1, 1)), estimates):
            rgb[:, channel, dy::2, dx::2] = estimate[:, dy::2, dx::2]
    return rgb.clamp(min=0.0)


@pytest.mark.parametrize("shape", [(8, 8), (10, 14), (9, 7)])
def test_gradient_demosaic_is_the_papers_filters_at_every_pixel_and_border(shape):
    from pipeline.moire.isp import gradient_demosaic

    raw = torch.rand(2, 1, *shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    even = [size + size % 2 for size in shape]  # an odd frame is the even one with its reflected row or column
    reference = _malvar_he_cutler(torch.nn.functional.pad(raw, (0, even[1] - shape[1], 0, even[0] - shape[0]),
                                                          mode="reflect"))[..., : shape[0], : shape[1]]
    torch.testing.assert_close(gradient_demosaic(raw), reference, rtol=0, atol=1e-12)


def test_gradient_demosaic_restores_flat_colour_and_a_smooth_image_better_than_bilinear():
    from pipeline.moire.isp import gradient_demosaic

    rgb = _image(0.8, 0.4, 0.1)
    torch.testing.assert_close(gradient_demosaic(bayer_mosaic(rgb)), rgb)
    y, x = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    # the colours share their detail, as natural images' do (the correction borrows it across channels)
    detail = 0.5 + 0.3 * torch.sin(x / 2 + y / 3) * torch.cos(x / 5 - y / 4)
    smooth = (torch.tensor([0.9, 0.7, 0.5])[:, None, None] * detail + torch.tensor([0.05, 0.1, 0.2])[:, None, None])[None]
    inner = (..., slice(4, -4), slice(4, -4))  # away from the reflected borders
    error = {name: (f(bayer_mosaic(smooth)) - smooth)[inner].abs().mean() for name, f in
             (("bilinear", demosaic), ("gradient", gradient_demosaic))}
    assert error["gradient"] < 0.7 * error["bilinear"], error


def test_each_capture_takes_its_own_demosaic():
    from pipeline.moire.isp import demosaic_each, gradient_demosaic

    raw = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    mixed = demosaic_each(raw, ["gradient", None, "bilinear"])
    torch.testing.assert_close(mixed[:1], gradient_demosaic(raw[:1]))
    assert torch.equal(mixed[1:], demosaic(raw[1:]))
    assert torch.equal(demosaic_each(raw, [None, None, None]), demosaic(raw))


def test_isp_demosaic_draws_last_and_only_when_set():
    (moire, clean), capture = _capture(2, size=96, **LAYERED_16PX)
    assert capture.demosaic is None and "demosaic" not in capture.as_record()
    gradient = {**LAYERED_16PX, "isp": {**LAYERED_16PX["isp"], "demosaic": ["gradient"]}}
    (sharp, sharp_clean), sharp_capture = _capture(2, size=96, **gradient)
    assert sharp_capture.demosaic == "gradient" and sharp_capture.as_record()["demosaic"] == "gradient"
    assert {k: v for k, v in vars(sharp_capture).items() if k != "demosaic"} == {
        k: v for k, v in vars(capture).items() if k != "demosaic"}
    assert sharp_clean.tobytes() == clean.tobytes() and sharp.tobytes() != moire.tobytes()


def test_white_balance_and_sharpening():
    torch.testing.assert_close(white_balance(_image(0.5, 0.5, 0.5), torch.tensor([[1.2, 1.0, 0.8]]))[0, :, 0, 0],
                               torch.tensor([0.6, 0.5, 0.4]))
    edge = torch.zeros(1, 3, 16, 16)
    edge[..., 8:] = 0.5
    sharp = sharpen(edge, torch.tensor([1.0]))
    assert sharp[0, 0, 4, 9] > 0.5 and sharp[0, 0, 4, 6] == 0.0  # overshoot on the bright side only (clipped)


def test_jpeg_quality_tables_and_artifacts():
    luma_50, _ = quantisation_tables(torch.tensor([50]), torch.device("cpu"))
    assert luma_50[0, 0, 0] == 16  # quality 50 is the Annex K table itself
    image = torch.from_numpy(render_screen_content("chart", np.random.default_rng(0))[:64, :64].copy()).permute(2, 0, 1)[None] / 255.0
    low, high = jpeg_compress(image.repeat(2, 1, 1, 1), torch.tensor([20, 95]))
    error_low, error_high = (low - image).abs().mean(), (high - image).abs().mean()
    assert error_high < 0.01 < error_low
    odd = jpeg_compress(torch.rand(1, 3, 21, 30), torch.tensor([90]))
    assert odd.shape == (1, 3, 21, 30)


# --- whole capture ---------------------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_other_bytes():
    (m1, c1), _ = _capture(3)
    (m2, c2), _ = _capture(3)
    (m3, _), _ = _capture(4)
    assert m1.tobytes() == m2.tobytes() and c1.tobytes() == c2.tobytes()
    assert m1.tobytes() != m3.tobytes()


def test_bytes_do_not_depend_on_torch_thread_count():
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        (one, _), _ = _capture(5, size=96)
        torch.set_num_threads(max(2, previous))
        (many, _), _ = _capture(5, size=96)
    finally:
        torch.set_num_threads(previous)
    assert one.tobytes() == many.tobytes()


def test_moire_is_visible_but_content_is_the_same():
    (moire, clean), _ = _capture(5, size=96, optics={"distance_mm": [405, 405], "rotation_deg": [2, 2]})
    assert 10 < _psnr(moire, clean) < 32  # visibly degraded, yet recognisably the same picture


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
    # Low-pass and normalise both so neither the moiré nor the colour shift dominates.
    a, b = (cv2.GaussianBlur(x.mean(axis=2), (0, 0), 1.5) for x in (moire, clean))
    a, b = ((x - x.mean()) / x.std() for x in (a, b))
    assert _shift_of_best_match(a, b) == (0, 0)


@pytest.mark.parametrize("scale", [0.25, 0.5, 1.5])
def test_content_scale_sets_source_pixels_per_display_pixel(scale):
    cfg = parse_params({"synthesize": {"size": 64, "display": {"content_scale": [scale, scale]}}}).synthesize
    for seed in range(4):
        capture = sample_capture_params(cfg, (2048, 2048), np.random.default_rng(seed))
        assert capture.crop_side == round(capture.display_size * scale)


def test_the_most_magnified_content_of_the_smallest_pairs_renders():
    cfg = parse_params({"synthesize": {"size": 32, "display": {"content_scale": [0.1, 0.1]}}}).synthesize
    source = render_screen_content("document", np.random.default_rng(1))
    for seed in range(4):
        capture = sample_capture_params(cfg, source.shape[:2], np.random.default_rng(seed))
        assert capture.crop_side >= 1
        moire, clean = simulate_capture(source, capture, 32, cfg.optics.supersample)
        assert moire.shape == clean.shape == (32, 32, 3)


def test_content_scale_default_draws_what_the_sampler_always_drew():
    """The default range takes the draw the sampler took before it was a param, so default datasets keep their bytes."""
    cfg = parse_params({"synthesize": {"size": 64}}).synthesize
    captures = [sample_capture_params(cfg, (2048, 2048), np.random.default_rng(seed)) for seed in range(4)]
    # (display side, crop side) as the sampler drew them with 0.8–2 written into its code
    assert [(c.display_size, c.crop_side) for c in captures] == [(92, 168), (81, 97), (103, 136), (73, 96)]


def test_batch_renders_each_capture_as_alone():
    cfg = parse_params({"synthesize": {"size": 48}}).synthesize
    source = render_screen_content("ui", np.random.default_rng(2))
    captures = [sample_capture_params(cfg, source.shape[:2], np.random.default_rng(s)) for s in range(4)]
    content = content_batch([source] * 4, captures)
    moire_batch, clean_batch = simulate_batch(content, captures, 48, 2)
    for i in range(4):
        moire_alone, clean_alone = simulate_batch(content[i : i + 1], captures[i : i + 1], 48, 2)
        torch.testing.assert_close(clean_batch[i : i + 1], clean_alone, atol=1e-5, rtol=0)
        # JPEG decodes to 8-bit levels; float reassociation may flip a rare rounding by one level.
        assert (moire_batch[i : i + 1] - moire_alone).abs().max() <= 1 / 255 + 1e-6


def _brightness_ratios(preset: str) -> list[float]:
    """Mean capture / mean target of a flat grey screen over 8 captures of `preset`."""
    cfg = parse_params({"synthesize": {"size": 48, "preset": preset}}).synthesize
    grey = np.full((256, 256, 3), 128, np.uint8)
    ratios = []
    for seed in range(8):
        capture = sample_capture_params(cfg, grey.shape[:2], np.random.default_rng(seed))
        moire, clean = simulate_capture(grey, capture, 48, cfg.optics.supersample)
        ratios.append(moire.mean() / clean.mean())
    return ratios


def test_classic_preset_darkens_and_the_default_keeps_the_targets_tone():
    """A fixed exposure loses light to the black matrix; an auto-exposed capture of its own target does not."""
    assert 0.7 < np.mean(_brightness_ratios("classic")) < 0.95
    assert np.mean(_brightness_ratios("default")) == pytest.approx(1.0, abs=0.03)


def test_presets_fill_in_ranges_and_explicit_values_win():
    coarse = parse_params({"synthesize": {"preset": "coarse", "optics": {"tilt": [0.0, 0.05]}}}).synthesize
    assert coarse.optics.beat_period_px == (40.0, 250.0) and coarse.optics.tilt == (0.0, 0.05)
    low, high = pitch_ratio_bounds(coarse)  # near the Bayer mosaic's colour resonance, 2 camera pixels
    assert 1.9 < low < 2.0 < high < 2.15
    fine_low, fine_high = pitch_ratio_bounds(parse_params({"synthesize": {"preset": "fine"}}).synthesize)
    assert fine_low < 0.9 and fine_high > 2.5  # both resonances, far from them
    classic = parse_params({"synthesize": {"preset": "classic"}}).synthesize
    assert classic.optics.beat_period_px is None and classic.target_tone == "source"
    assert 0.6 < pitch_ratio_bounds(classic)[0] < 1.0 < pitch_ratio_bounds(classic)[1] < 1.7  # about 405 mm / distance
    document = parse_params({"synthesize": {"preset": "document"}}).synthesize
    assert not document.sources.bundled and "chart" not in document.sources.screen_kinds
    assert SynthesizeParams().optics == parse_params({"synthesize": {"preset": "default"}}).synthesize.optics


# --- camera resolution, metering, ISP additions, procedural patterns -------------------------

def test_the_frame_shrinks_by_pitch_over_output_pitch_within_limits():
    from pipeline.moire.simulate import camera_downscale, sensor_side

    assert camera_downscale(2.0, 1.0, 4.0) == 2.0
    assert camera_downscale(0.7, 1.0, 4.0) == 1.0  # never enlarged
    assert camera_downscale(9.0, 1.0, 4.0) == 4.0
    assert sensor_side(64, 2.3) == 148 and sensor_side(64, 1.0) == 64  # even, for the Bayer tile


def test_camera_resolution_capture_comes_back_at_the_dataset_size_and_aligned():
    phone = {"sensor": {"output_pitch": [0.9, 0.9], "pixel_pitch_um": [1.2, 1.2]}}
    (moire, clean), capture = _capture(3, size=64, **phone)
    assert moire.shape == clean.shape == (64, 64, 3) and capture.downscale > 1.5
    import cv2

    a, b = (cv2.GaussianBlur(x.mean(axis=2), (0, 0), 1.5) for x in (moire, clean))
    a, b = ((x - x.mean()) / x.std() for x in (a, b))
    assert _shift_of_best_match(a, b) == (0, 0)


def test_auto_exposure_gives_captures_the_sources_brightness_whatever_the_panel():
    grey = np.full((256, 256, 3), 110, np.uint8)
    dim_panel = {"display": {"brightness": [0.6, 0.6]}, "sensor": {"exposure_ev": [0.0, 0.0]}}
    ratios = {}
    for metered in (False, True):
        cfg = parse_params({"synthesize": {"size": 48, "preset": "classic", **dim_panel, "sensor": {**dim_panel["sensor"], "auto_exposure": metered}}}).synthesize
        values = []
        for seed in range(4):
            capture = sample_capture_params(cfg, grey.shape[:2], np.random.default_rng(seed))
            moire, clean = simulate_capture(grey, capture, 48, 2)
            values.append(moire.mean() / clean.mean())
        ratios[metered] = np.mean(values)
    assert ratios[False] < 0.85  # a dim panel photographed at a fixed exposure comes out dark
    assert ratios[True] == pytest.approx(1.0, abs=0.05)


def test_chroma_denoise_smooths_colour_and_keeps_luma():
    from pipeline.moire.isp import denoise_chroma

    rng = torch.Generator().manual_seed(0)
    image = 0.5 + 0.2 * (torch.rand(1, 3, 32, 32, generator=rng) - 0.5)
    smoothed = denoise_chroma(image, torch.tensor([2.0]))
    luma = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
    torch.testing.assert_close((smoothed * luma).sum(1), (image * luma).sum(1), atol=1e-5, rtol=0)
    chroma = image - (image * luma).sum(1, keepdim=True)
    assert (smoothed - (smoothed * luma).sum(1, keepdim=True)).std() < 0.5 * chroma.std()
    assert torch.equal(denoise_chroma(image, torch.tensor([0.0])), image)


def test_black_point_subtraction_maps_the_black_level_to_zero_and_keeps_white():
    from pipeline.moire.isp import subtract_black_point

    out = subtract_black_point(torch.tensor([0.004, 1.0]).reshape(1, 1, 1, 2), torch.tensor([0.004]))
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 1.0]))


def test_output_blur_softens_the_capture_only():
    sharp = {"isp": {"output_blur": [0.0, 0.0]}}
    soft = {"isp": {"output_blur": [1.5, 1.5]}}
    (moire_sharp, clean_sharp), _ = _capture(2, size=64, **sharp)
    (moire_soft, clean_soft), _ = _capture(2, size=64, **soft)
    assert clean_soft.tobytes() == clean_sharp.tobytes()
    assert np.abs(np.diff(moire_soft.astype(float), axis=1)).mean() < 0.7 * np.abs(np.diff(moire_sharp.astype(float), axis=1)).mean()


def test_capture_toned_target_takes_the_moire_images_global_tone():
    (moire, clean), _ = _capture(4, size=64, target_tone="capture", display={"brightness": [0.6, 0.6]})
    (_, source_toned), _ = _capture(4, size=64, display={"brightness": [0.6, 0.6]})
    assert abs(clean.mean() - moire.mean()) < 2.0  # grey levels
    assert abs(clean.mean() - moire.mean()) < abs(source_toned.mean() - moire.mean())


def test_band_patterns_replace_the_physics_for_their_share_of_pairs():
    from pipeline.moire.patterns import band_modulation, sample_band_pattern

    pattern = sample_band_pattern(np.random.default_rng(0), (8.0, 8.0), (0.2, 0.2))
    modulation = band_modulation(96, pattern)
    assert modulation.shape == (3, 96, 96) and modulation.min() >= 0
    assert float(modulation.mean()) == pytest.approx(1.0, abs=0.05)
    assert torch.equal(modulation, band_modulation(96, pattern))  # drawn from its own seed
    (moire, clean), capture = _capture(1, size=64, patterns={"fraction": 1.0, "amplitude": [0.3, 0.3]})
    assert capture.pattern is not None and capture.as_record()["generator"] == "bands"
    assert 10 < _psnr(moire, clean) < 35
    (_, _), plain = _capture(1, size=64)
    assert plain.pattern is None and np.isnan(plain.as_record()["pattern_amplitude"])


def test_beat_directed_captures_beat_at_the_drawn_period():
    from pipeline.moire.simulate import beating_pitch, distance_for_pitch

    pitch, rotation = beating_pitch(1, 40.0, 0.0)  # display frequency 1/2 + 1/40 along x: pitch 1/0.525
    assert pitch == pytest.approx(1 / 0.525) and rotation == pytest.approx(0.0)
    assert pitch_ratio(0.25, distance_for_pitch(pitch, 0.25, 5.0, 1.2), 5.0, 1.2) == pytest.approx(pitch)
    _, tilted = beating_pitch(2, 40.0, 90.0)
    assert tilted == pytest.approx(np.degrees(np.arctan2(1 / 40, 1.0)))
    directed = {"optics": {"beat_period_px": [30.0, 30.0], "resonance_orders": [1]},
                "sensor": {"output_pitch": [0.9, 0.9], "pixel_pitch_um": [1.2, 1.2]}}
    (_, _), capture = _capture(0, size=64, **directed)
    assert capture.beat_period_px == pytest.approx(30.0)
    assert capture.pitch_ratio == pytest.approx(2.0, abs=2 / 30 * 2)


# A layered capture beating at 16 px, without noise, sharpening or compression.
LAYERED_16PX = {"moire_model": "layer", "target_tone": "capture",
                "optics": {"beat_period_px": [16.0, 16.0], "blur_sigma": [0.3, 0.3]},
                "sensor": {"output_pitch": [0.9, 0.9], "pixel_pitch_um": [1.2, 1.2], "shot_noise": [0, 0], "read_noise": [0, 0]},
                "isp": {"jpeg_quality": [100, 100], "sharpen": [0, 0]}}


def test_a_layered_capture_is_its_target_times_a_white_screens_moire():
    layered = LAYERED_16PX
    (moire, clean), capture = _capture(2, size=96, **layered)
    assert capture.moire_layer and _psnr(moire, clean) < 30  # visible bands
    residual = moire.astype(float).mean(axis=2) - clean.astype(float).mean(axis=2)
    power = np.abs(np.fft.fft2(residual - residual.mean())) ** 2
    radius = np.hypot(np.fft.fftfreq(96)[:, None], np.fft.fftfreq(96)[None, :])
    bands = power[(radius > 1 / 32) & (radius < 1 / 8)].sum()
    assert bands > power[radius > 1 / 4].sum()  # the moiré sits in the bands, not in the finest pixels
    assert abs(moire.mean() - clean.mean()) < 3  # no tone shift between the capture and its target


def test_capture_detailed_target_carries_the_photos_blur_and_sharpening_and_nothing_else():
    from pipeline.moire.isp import sharpen
    from pipeline.moire.optics import lens_blur

    layered = {"preset": "default", "isp": {"output_blur": [0.8, 0.8], "sharpen": [0.5, 0.5]}}
    (moire, sharp_target), _ = _capture(6, size=64, **layered)
    (same_moire, soft_target), capture = _capture(6, size=64, target_detail="capture", **layered)
    assert capture.target_detail_of_capture and not _capture(6, size=64, **layered)[1].target_detail_of_capture
    assert same_moire.tobytes() == moire.tobytes()  # only the target changes
    expected = lens_blur(sharpen(torch.from_numpy(sharp_target).permute(2, 0, 1)[None].float() / 255, torch.tensor([0.5])),
                         torch.tensor([0.8]))
    assert np.abs(soft_target.astype(float) - expected[0].permute(1, 2, 0).numpy() * 255).max() <= 1.5  # both rounded to uint8
    # the moiré image now differs from its target by its moiré, noise and compression, not by edges
    assert _psnr(moire, soft_target) > _psnr(moire, sharp_target)


def test_with_contrast_sets_each_layers_rms_contrast_and_nan_keeps_it():
    from pipeline.moire.simulate import with_contrast

    generator = torch.Generator().manual_seed(0)
    layers = 1.0 + 0.05 * torch.randn(2, 3, 16, 16, generator=generator)
    scaled = with_contrast(layers, torch.tensor([0.2, float("nan")]))
    deviation = scaled[0] - 1.0
    assert deviation.square().mean().sqrt().item() == pytest.approx(0.2, rel=1e-4)
    assert torch.allclose(deviation / 4, (layers[0] - 1.0) * 0.2 / 4 / (layers[0] - 1.0).square().mean().sqrt())
    assert torch.equal(scaled[1], layers[1])
    assert with_contrast(layers, torch.tensor([5.0, 5.0])).min() == 0.0  # never negative light


def test_moire_contrast_draws_each_pairs_contrast_and_leaves_the_other_draws_alone():
    layered = LAYERED_16PX
    (physical, clean), capture = _capture(2, size=96, **layered)
    assert np.isnan(capture.moire_contrast)
    stronger = {**layered, "optics": {**layered["optics"], "moire_contrast": [0.4, 0.4]}}
    weaker = {**layered, "optics": {**layered["optics"], "moire_contrast": [0.02, 0.02]}}
    (strong, strong_clean), strong_capture = _capture(2, size=96, **stronger)
    (weak, weak_clean), _ = _capture(2, size=96, **weaker)
    assert strong_capture.moire_contrast == pytest.approx(0.4)
    assert strong_clean.tobytes() == clean.tobytes() == weak_clean.tobytes()  # the target does not change
    assert _psnr(strong, clean) < _psnr(physical, clean) < _psnr(weak, clean)
    assert abs(strong.mean() - clean.mean()) < 4 and abs(weak.mean() - clean.mean()) < 3  # no tone shift either way


def test_a_moire_free_fraction_is_drawn_last_and_leaves_the_other_draws_alone():
    _, capture = _capture(2, size=96, **LAYERED_16PX)
    assert capture.moire_free is None and "moire_free" not in capture.as_record()  # unset: the same manifest
    frees = set()
    for seed in range(12):
        _, plain = _capture(seed, size=96, **LAYERED_16PX)
        _, drawn = _capture(seed, size=96, **deep_merge(LAYERED_16PX, {"moire_free_fraction": 0.5}))
        assert replace(drawn, moire_free=None) == plain
        assert drawn.as_record()["moire_free"] is drawn.moire_free
        frees.add(drawn.moire_free)
    assert frees == {True, False}


def test_a_moire_free_layered_capture_is_the_photo_of_a_flat_layer():
    (flat, flat_clean), _ = _capture(2, size=96, **deep_merge(LAYERED_16PX, {"optics": {"moire_contrast": [0.0, 0.0]}}))
    (free, free_clean), capture = _capture(2, size=96, **deep_merge(LAYERED_16PX, {"moire_free_fraction": 1.0}))
    (moire, _), _ = _capture(2, size=96, **LAYERED_16PX)
    assert capture.moire_free
    assert free.tobytes() == flat.tobytes() and free_clean.tobytes() == flat_clean.tobytes()
    assert _psnr(free, free_clean) > _psnr(moire, free_clean) + 3  # the grid's moiré is what it lacks


def test_a_moire_free_rendered_capture_is_the_content_through_the_lens_without_the_grid():
    free = deep_merge(LAYERED_16PX, {"moire_free_fraction": 1.0, "optics": {"blur_sigma": [1.0, 1.0]}})
    (layered, clean), _ = _capture(2, size=96, **free)
    (rendered, rendered_clean), capture = _capture(2, size=96, **{**free, "moire_model": "render"})
    (moire, moire_clean), _ = _capture(2, size=96, **{**free, "moire_free_fraction": 0.0, "moire_model": "render"})
    assert capture.moire_free and not capture.moire_layer
    assert rendered_clean.tobytes() == clean.tobytes()

    def detail(image: np.ndarray) -> float:
        return float(np.abs(np.diff(image.astype(float), axis=1)).mean())

    assert detail(rendered) < 0.9 * detail(layered)  # the render model's lens blurs the content too...
    assert detail(rendered) == pytest.approx(detail(moire), rel=0.1)  # ...as much as its photo with moiré
    assert _psnr(rendered, clean) > _psnr(moire, moire_clean) + 2


def test_the_colour_matrix_undoes_the_filters_crosstalk_for_flat_colours():
    from pipeline.moire.isp import colour_matrix
    from pipeline.moire.sensor import mix_crosstalk

    light = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    crosstalk = torch.tensor([0.1, 0.25, 0.4])
    mixed = mix_crosstalk(light, crosstalk)
    own, others = light[1, :, 0, 0], light[1, :, 0, 0].sum() - light[1, :, 0, 0]
    torch.testing.assert_close(mixed[1, :, 0, 0], (own + 0.25 * others) / 1.5)  # its own, a quarter of the others
    torch.testing.assert_close(mix_crosstalk(torch.ones(3, 3, 2, 2), crosstalk), torch.ones(3, 3, 2, 2))  # white stays
    torch.testing.assert_close(colour_matrix(mixed, crosstalk), light)
    unset = torch.full((3,), float("nan"))
    assert mix_crosstalk(light, unset) is light and colour_matrix(light, unset) is light


@pytest.mark.parametrize("moire_model", ["layer", "render"])
def test_no_crosstalk_draws_nothing_and_none_renders_the_same_bytes(moire_model):
    physics = {**LAYERED_16PX, "moire_model": moire_model}
    (moire, clean), capture = _capture(2, size=96, **physics)
    none_physics = deep_merge(physics, {"sensor": {"crosstalk": [0.0, 0.0]}})
    (none, none_clean), none_capture = _capture(2, size=96, **none_physics)
    assert np.isnan(capture.crosstalk) and "crosstalk" not in capture.as_record()  # null: the same manifest
    assert none_capture.crosstalk == 0.0
    assert {k: v for k, v in vars(none_capture).items() if k != "crosstalk"} == {
        k: v for k, v in vars(capture).items() if k != "crosstalk"}  # drawn last: every other draw is the same
    assert none.tobytes() == moire.tobytes() and none_clean.tobytes() == clean.tobytes()


def test_crosstalk_turns_a_saturated_screens_moire_into_false_colour_in_the_other_channels():
    blue = np.zeros((256, 256, 3), np.uint8)
    blue[..., 2] = 230

    def photo(crosstalk):
        cfg = parse_params({"synthesize": {"size": 96, "moire_model": "render",
                                           "sensor": {"crosstalk": crosstalk}}}).synthesize
        capture = sample_capture_params(cfg, blue.shape[:2], np.random.default_rng(2))
        return simulate_capture(blue, capture, 96, 1)

    (plain, clean), (crossed, crossed_clean) = photo(None), photo([0.3, 0.3])
    assert crossed_clean.tobytes() == clean.tobytes()  # the target does not change
    red, crossed_red = plain[..., 0].astype(float), crossed[..., 0].astype(float)
    assert crossed_red.std() > 4 * red.std()  # blue's grid now stripes the red channel too
    assert _psnr(crossed, clean) < _psnr(plain, clean) - 3


def test_focus_weight_is_zero_on_the_focus_line_and_one_a_half_frame_away():
    from pipeline.moire.optics import focus_weight

    weight = focus_weight(8, 1, torch.tensor([0.0, -0.75]), torch.tensor([0.0, 90.0]))
    # columns at -0.875 … 0.875 half-frames; direction 0° runs along x, 90° along y
    torch.testing.assert_close(weight[0, 0, 3], torch.tensor([0.875, 0.625, 0.375, 0.125, 0.125, 0.375, 0.625, 0.875]))
    assert torch.equal(weight[0, 0, :, 2], weight[0, 0, 0, 2].expand(8))  # constant along the focus line
    torch.testing.assert_close(weight[1, 0, :, 0], torch.tensor([0.125, 0.125, 0.375, 0.625, 0.875, 1.0, 1.0, 1.0]))


def test_no_defocus_spread_renders_the_same_bytes_and_draws():
    (moire, clean), capture = _capture(2, size=96, **LAYERED_16PX)
    flat = {**LAYERED_16PX, "optics": {**LAYERED_16PX["optics"], "defocus_spread": [0.0, 0.0]}}
    (flat_moire, flat_clean), flat_capture = _capture(2, size=96, **flat)
    assert flat_moire.tobytes() == moire.tobytes() and flat_clean.tobytes() == clean.tobytes()
    assert flat_capture.focus_position != 0.0 and flat_capture.defocus_spread == 0.0
    assert {"defocus_spread", "focus_position"} <= set(flat_capture.as_record())
    assert not {"defocus_spread", "focus_position"} & set(capture.as_record())  # null: the manifest keeps its columns
    drawn = {k: v for k, v in vars(flat_capture).items() if k not in ("defocus_spread", "focus_position")}
    assert drawn == {k: v for k, v in vars(capture).items() if k not in ("defocus_spread", "focus_position")}


def _defocused_pair(moire_model: str):
    """A capture without and with a defocus spread of 3 camera px, the target, and masks near / far from focus."""
    from pipeline.moire.optics import focus_weight

    base = {**LAYERED_16PX, "moire_model": moire_model}
    spread = {**base, "optics": {**base["optics"], "defocus_spread": [3.0, 3.0]}}
    (moire, clean), _ = _capture(2, size=96, **base)
    (faded, faded_clean), capture = _capture(2, size=96, **spread)
    assert faded_clean.tobytes() == clean.tobytes()  # the target does not change
    weight = focus_weight(96, 1, torch.tensor([capture.focus_position]), torch.tensor([capture.tilt_direction_deg]))[0, 0]
    near, far = (weight < 0.15).numpy(), (weight > 0.9).numpy()
    assert near.sum() > 300 and far.sum() > 300, (near.sum(), far.sum())
    return moire.astype(float), faded.astype(float), clean.astype(float), near, far


def test_a_defocus_spread_fades_the_layers_moire_away_from_the_focus_line():
    moire, faded, clean, near, far = _defocused_pair("layer")

    def strength(image: np.ndarray, where: np.ndarray) -> float:
        return float(np.sqrt(((image - clean) ** 2)[where].mean()))

    assert strength(faded, near) > 0.8 * strength(moire, near)  # kept where the screen is in focus
    assert strength(faded, far) < 0.5 * strength(moire, far)  # mostly gone where it is not


def test_a_defocus_spread_blurs_a_rendered_capture_only_away_from_the_focus_line():
    moire, faded, _, near, far = _defocused_pair("render")  # the content is photographed through the lens too
    change_near, change_far = np.abs(faded - moire)[near].mean(), np.abs(faded - moire)[far].mean()
    assert change_far > 5 * change_near, (change_near, change_far)
