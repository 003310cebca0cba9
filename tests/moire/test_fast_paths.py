"""The simulator's fast paths compute what their direct forms compute (issue 14: speed, not new physics)."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.moire.display import (
    LUMA, STRIPE_COLUMNS, decode_display_gamma, panel_colour, subpixel_coverage, white_screen_light,
)
from pipeline.moire.isp import CHROMA_LUMA, demosaic, denoise_chroma, shrink_denoised, shrink_to, tone_curve
from pipeline.moire.jpeg import RGB_TO_YCBCR, camera_jpeg, dct_matrix, jpeg_compress, quantisation_tables
from pipeline.moire.optics import (
    _filter_along, _filter_weights, blur_radius, blurred_mosaic, filter_columns, filter_rows, gaussian_kernels,
    lens_blur, separable_filter,
)
from pipeline.moire.sensor import (
    METER_GAMMA, METER_HIGHLIGHT_QUANTILE, METER_WEIGHTS, RGGB, bayer_mosaic, metered_gain, upper_quantile,
)


def _lit_length(x: torch.Tensor, start: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Lit length in [0, x] of a pattern of period 1 lit on [start, start + length)."""
    whole = torch.floor(x)
    return whole * length + torch.clamp(x - whole - start, min=0.0).minimum(length)


def _box(x: torch.Tensor, width: torch.Tensor, start: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    return (_lit_length(x + width / 2, start, length) - _lit_length(x - width / 2, start, length)) / width


def _direct_coverage(u, v, footprint, layout, fill):
    """The layouts' coverage written out channel by channel, in float64."""
    u, v, width, fill = u.double(), v.double(), footprint.double().reshape(-1, 1, 1), fill.double().reshape(-1, 1, 1)
    rows = _box(v, width, (1 - fill) / 2, fill) / fill
    if layout in STRIPE_COLUMNS:
        return torch.stack([rows * _box(u, width, (c + (1 - fill) / 2) / 3, fill / 3) / (fill / 3)
                            for c in STRIPE_COLUMNS[layout]], dim=1)
    left = rows * _box(u, width, (1 - fill) / 4, fill / 2) / (fill / 2)
    right = rows * _box(u, width, 0.5 + (1 - fill) / 4, fill / 2) / (fill / 2)
    even_row = torch.floor(v) % 2 == 0
    red_pixel = (torch.floor(u) + torch.floor(v)) % 2 == 0
    red_blue = torch.where(even_row, left, right)
    return torch.stack([2 * red_blue * red_pixel, torch.where(even_row, right, left), 2 * red_blue * ~red_pixel], dim=1)


@pytest.mark.parametrize("layout", ["rgb_stripe", "bgr_stripe", "pentile"])
def test_coverage_equals_the_direct_form_far_from_the_origin(layout):
    generator = torch.Generator().manual_seed(3)
    # display coordinates as large as a 512² capture's (float32 holds them to 6e-5 px there), footprints
    # from the narrowest the default ranges give to wider than a display pixel
    u, v = (torch.rand(2, 40, 40, generator=generator) * 1000).unbind(0)
    u, v = u[None].expand(3, -1, -1), v[None].expand(3, -1, -1)
    footprint, fill = torch.tensor([0.2, 0.45, 1.3]), torch.tensor([0.6, 0.75, 0.9])
    got = subpixel_coverage(u, v, footprint, layout, fill)
    torch.testing.assert_close(got.double(), _direct_coverage(u, v, footprint, layout, fill), atol=5e-3, rtol=1e-3)


def _stencil_demosaic(raw: torch.Tensor) -> torch.Tensor:
    """Bilinear demosaic as a convolution of the masked mosaic, reflect borders."""
    masks = torch.zeros(1, 3, *raw.shape[2:])
    for dy in (0, 1):
        for dx in (0, 1):
            masks[0, RGGB[dy][dx], dy::2, dx::2] = 1.0
    sparse = F.pad(raw * masks, (1, 1, 1, 1), mode="reflect")
    red_blue = torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    green = torch.tensor([[0.0, 0.25, 0.0], [0.25, 1.0, 0.25], [0.0, 0.25, 0.0]])
    kernels = torch.stack([red_blue, green, red_blue])[:, None]
    return F.conv2d(sparse, kernels, groups=3)


@pytest.mark.parametrize("shape", [(2, 1, 6, 8), (1, 1, 7, 9), (1, 1, 5, 4), (1, 1, 2, 2)])
def test_demosaic_is_the_bilinear_stencil_at_every_pixel_and_border(shape):
    raw = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(demosaic(raw), _stencil_demosaic(raw), atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(2, 3, 10, 12), (1, 3, 9, 11)])
def test_blurred_mosaic_is_the_mosaic_of_the_blurred_light_to_the_bit(shape):
    light = torch.rand(*shape, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([0.4, 1.3][: shape[0]])
    assert torch.equal(blurred_mosaic(light, sigma), bayer_mosaic(lens_blur(light, sigma)))
    assert torch.equal(blurred_mosaic(light, torch.zeros(shape[0])), bayer_mosaic(light))


@pytest.mark.parametrize("shape", [(2, 3, 40, 33), (1, 2, 9, 14)])
def test_opencvs_filter_is_the_tap_loop_to_float_rounding(shape):
    image = torch.rand(*shape, generator=torch.Generator().manual_seed(11))
    sigma = torch.tensor([0.45, 2.2][: shape[0]])  # each capture its own kernel, cut at its own 3σ
    kernels = gaussian_kernels(sigma, blur_radius(sigma))
    weights = _filter_weights(image, kernels)
    rows, columns = _filter_along(image, weights, -1), _filter_along(image, weights, -2)
    torch.testing.assert_close(filter_rows(image, kernels), rows, atol=1e-6, rtol=0)
    torch.testing.assert_close(filter_columns(image, kernels), columns, atol=1e-6, rtol=0)
    torch.testing.assert_close(separable_filter(image, kernels), _filter_along(rows, weights, -2), atol=1e-6, rtol=0)
    assert (separable_filter(image, kernels) - image).abs().max() > 0.1  # it does blur
    # the tap loop stays the path for float64 (and CUDA): the same filter in full precision
    torch.testing.assert_close(separable_filter(image.double(), kernels.double()).float(),
                               separable_filter(image, kernels), atol=1e-6, rtol=0)
    # one kernel for the whole batch, as the tap loop broadcasts it
    torch.testing.assert_close(separable_filter(image, kernels[:1]),
                               _filter_along(_filter_along(image, weights[:1], -1), weights[:1], -2), atol=1e-6, rtol=0)
    # a blur whose width is being learnt keeps its gradient (the tap loop)
    learnt = sigma.clone().requires_grad_()
    separable_filter(image, gaussian_kernels(learnt, blur_radius(sigma))).sum().backward()
    assert learnt.grad is not None


def test_display_gamma_is_each_captures_power_law_at_every_level():
    levels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(2, 3, 16, 16)
    gamma = torch.tensor([2.1, 2.4])
    expected = (torch.arange(256, dtype=torch.float32) / 255.0)[None] ** gamma.reshape(-1, 1)
    got = decode_display_gamma(levels, gamma)  # OpenCV's lookup on the CPU
    assert torch.equal(got, expected.reshape(2, 1, 16, 16).expand(2, 3, 16, 16))
    assert torch.equal(decode_display_gamma(levels[1:], gamma[1:]), got[1:])  # a capture alone as in its batch
    # another dtype takes the indexed table: the same values
    assert torch.equal(decode_display_gamma(levels.to(torch.int64), gamma), got)
    # a gamma being learnt keeps its gradient, an empty batch stays empty
    learnt = gamma.clone().requires_grad_()
    decode_display_gamma(levels, learnt).sum().backward()
    assert learnt.grad is not None and bool((learnt.grad < 0).all())  # a higher gamma darkens every level
    assert decode_display_gamma(levels[:0], gamma[:0]).shape == (0, 3, 16, 16)


def test_chroma_denoise_equals_blurring_all_three_colour_differences():
    rgb = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(4))
    sigma = torch.tensor([0.7, 2.0])
    luma = (rgb * torch.tensor(CHROMA_LUMA).reshape(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    direct = luma + separable_filter(rgb - luma, gaussian_kernels(sigma, blur_radius(sigma)))
    got = denoise_chroma(rgb, sigma)
    torch.testing.assert_close(got, direct, atol=1e-6, rtol=0)
    assert (got - rgb).abs().max() > 0.05  # it does blur


@pytest.mark.parametrize("sigma", [[0.0, 0.0], [0.6, 2.5]])
def test_shrinking_with_chroma_smoothing_equals_smoothing_then_shrinking(sigma):
    rgb = torch.rand(2, 3, 70, 70, generator=torch.Generator().manual_seed(5))
    sigma = torch.tensor(sigma)
    got = shrink_denoised(rgb, sigma, 32)
    torch.testing.assert_close(got, shrink_to(denoise_chroma(rgb, sigma), 32), atol=1e-6, rtol=0)
    assert got.shape == (2, 3, 32, 32)
    assert torch.equal(shrink_denoised(rgb, sigma, 70), denoise_chroma(rgb, sigma))  # nothing to shrink


def test_a_white_screen_is_black_only_off_the_panel():
    u = torch.tensor([[[-0.5, 0.5, 3.5, 4.0]]])
    coverage = torch.full((1, 3, 1, 4), 2.0)
    light = white_screen_light(u, torch.full_like(u, 1.0), coverage, side=4)
    assert light[0, :, 0].tolist() == [[0.0, 2.0, 2.0, 0.0]] * 3
    inside = white_screen_light(u[..., 1:3], torch.full_like(u[..., 1:3], 1.0), coverage[..., 1:3], side=4)
    assert torch.equal(inside, coverage[..., 1:3])


def test_tone_curve_is_the_power_law_to_float_precision():
    edges = torch.tensor([0.0, 1e-7, 1.0, 1.5, -0.2])  # black, deep shadow, white, above white, below black
    linear = torch.cat([edges, torch.rand(995, generator=torch.Generator().manual_seed(5))])
    linear = linear.reshape(1, 1, 1, -1).expand(2, 3, 1, -1)
    gamma = torch.tensor([2.2, 1.8])
    expected = linear.clamp(0, 1) ** (1 / gamma.reshape(-1, 1, 1, 1))
    # black is floored at float32's smallest normal number (a log of zeros is slow): it comes out
    # below 1e-15, twelve orders under half an 8-bit level
    torch.testing.assert_close(tone_curve(linear, gamma), expected, rtol=1e-6, atol=1e-15)
    first = tone_curve(linear, gamma)[0, 0, 0, :5].tolist()
    assert first == pytest.approx([0.0, 1e-7 ** (1 / 2.2), 1.0, 1.0, 0.0], rel=1e-6, abs=1e-15)
    assert 0.0 < first[0] < 1e-15


@pytest.mark.parametrize("count", [1, 2, 7, 1000, 37450, 37451])
def test_upper_quantile_is_torch_quantile_to_the_bit(count):
    values = torch.rand(3, count, generator=torch.Generator().manual_seed(count))
    values[0, : count // 2] = 0.25  # ties
    for q in (METER_HIGHLIGHT_QUANTILE, 0.9, 1.0):
        assert torch.equal(upper_quantile(values, q), torch.quantile(values, q, dim=1))


def test_panel_colour_is_saturation_about_luma_then_the_gains_clamped_at_black():
    linear = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(6))
    gamut, white_point, brightness = torch.tensor([1.4, 0.6]), torch.tensor([[1.1, 1.0, 0.9], [0.95, 1.0, 1.05]]), torch.tensor([0.8, 1.0])
    grey = (linear * torch.tensor(LUMA).reshape(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    direct = (grey + gamut.reshape(-1, 1, 1, 1) * (linear - grey)).clamp(min=0.0) * white_point.reshape(-1, 3, 1, 1) \
        * brightness.reshape(-1, 1, 1, 1)
    got = panel_colour(linear, gamut, white_point, brightness)
    torch.testing.assert_close(got, direct, atol=1e-6, rtol=0)
    assert int((got[0] == 0).sum()) > 0  # a gamut beyond the source's clips its saturated colours at black


def _direct_jpeg(rgb: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG's lossy steps written out: each 8×8 block as D·X·Dᵀ, 4:2:0 by average pooling."""
    d = dct_matrix(rgb.device)
    to_ycbcr = torch.tensor(RGB_TO_YCBCR)
    ycbcr = torch.einsum("ij,bjhw->bihw", to_ycbcr, rgb.clamp(0, 1) * 255.0)
    ycbcr[:, 1:] += 128.0

    def plane(values, table):
        b, h, w = values.shape
        blocks = (values - 128.0).reshape(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)
        table = table.reshape(b, 1, 1, 8, 8)
        restored = d.T @ (torch.round((d @ blocks @ d.T) / table) * table) @ d
        return restored.permute(0, 1, 3, 2, 4).reshape(b, h, w) + 128.0

    luma_table, chroma_table = quantisation_tables(quality, rgb.device)
    chroma = F.avg_pool2d(ycbcr[:, 1:], 2)
    chroma = torch.stack([plane(chroma[:, c], chroma_table) for c in (0, 1)], dim=1)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    decoded = torch.cat([plane(ycbcr[:, 0], luma_table)[:, None], chroma - 128.0], dim=1)
    return (torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_ycbcr), decoded).round().clamp(0, 255) / 255.0)


def test_jpeg_is_its_blockwise_form_to_an_8_bit_level_in_rare_pixels():
    rgb = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(7))
    quality = torch.tensor([30.0, 92.0])
    levels = ((jpeg_compress(rgb, quality) - _direct_jpeg(rgb, quality)).abs() * 255).round()
    assert float(levels.max()) <= 1.0  # a float sum in another order can tip a rounding by one level
    assert float((levels > 0).float().mean()) < 1e-3


def test_libjpeg_on_the_cpu_compresses_as_much_as_the_torch_model():
    # a smooth image with fine detail, as a camera frame is
    rgb = F.avg_pool2d(torch.rand(2, 3, 96, 80, generator=torch.Generator().manual_seed(8)), 3, 1, 1)
    quality = torch.tensor([60, 95])
    got = camera_jpeg(rgb, quality)
    assert got.shape == rgb.shape and got.dtype == rgb.dtype
    assert torch.equal((got * 255).round() / 255, got)  # 8-bit levels, as a decoder writes them
    model = jpeg_compress(rgb, quality)
    for image in range(2):
        error, model_error = ((got[image] - rgb[image]) ** 2).mean(), ((model[image] - rgb[image]) ** 2).mean()
        assert float(error / model_error) == pytest.approx(1.0, abs=0.1)
    low, high = ((got - rgb) ** 2).flatten(1).mean(1)
    assert low > 2 * high  # quality 60 loses more than 95
    assert torch.equal(camera_jpeg(rgb[1:], quality[1:]), got[1:])  # an image in a batch as alone
    assert camera_jpeg(torch.rand(1, 3, 21, 30), torch.tensor([90])).shape == (1, 3, 21, 30)
    # Pillow's JPEG (its own libjpeg) at the same quality and 4:2:0 decodes to the same levels, to within what
    # another libjpeg version could change: the channels reach the codec as red, green, blue (swapped, the
    # luma weighs them otherwise: 4–7 levels apart on average)
    for image, q in zip(rgb, quality.tolist()):
        levels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        encoded = io.BytesIO()
        Image.fromarray(levels).save(encoded, format="JPEG", quality=q, subsampling=2)
        pillow = torch.from_numpy(np.array(Image.open(encoded))).permute(2, 0, 1).float() / 255
        assert float((camera_jpeg(image[None], torch.tensor([q]))[0] - pillow).abs().mean() * 255) < 0.5


def test_the_meter_reading_every_seventh_pixel_reads_the_whole_frame():
    # a bright page with fine colour stripes: reading a sparse grid of it must see the same light
    x = torch.arange(96, dtype=torch.float32)
    stripes = 0.6 + 0.3 * torch.stack([torch.cos(2 * torch.pi * (x / 9.0 + shift)) for shift in (0, 1 / 3, 2 / 3)])
    frame = stripes[:, None, :].expand(3, 96, 96)[None].contiguous()
    reference = torch.full_like(frame, 0.5)
    gain = metered_gain(frame, reference, torch.zeros(1))
    luma = (frame * torch.tensor(METER_WEIGHTS).reshape(1, 3, 1, 1)).sum(dim=1).flatten(1)
    whole_frame = ((reference ** (1 / METER_GAMMA) * torch.tensor(METER_WEIGHTS).reshape(1, 3, 1, 1)).sum(dim=1).mean()
                   / (frame ** (1 / METER_GAMMA) * torch.tensor(METER_WEIGHTS).reshape(1, 3, 1, 1)).sum(dim=1).mean()) ** METER_GAMMA
    expected = min(float(whole_frame), 1.0 / float(torch.quantile(luma, METER_HIGHLIGHT_QUANTILE)))
    assert float(gain) == pytest.approx(expected, rel=0.01)
