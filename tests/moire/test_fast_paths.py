"""The simulator's fast paths compute what their direct forms compute (issue 14: speed, not new physics)."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.moire.display import STRIPE_COLUMNS, subpixel_coverage, white_screen_light
from pipeline.moire.isp import CHROMA_LUMA, demosaic, denoise_chroma, tone_curve
from pipeline.moire.optics import blur_radius, blurred_mosaic, gaussian_kernels, lens_blur, separable_filter
from pipeline.moire.sensor import RGGB, bayer_mosaic


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


def test_chroma_denoise_equals_blurring_all_three_colour_differences():
    rgb = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(4))
    sigma = torch.tensor([0.7, 2.0])
    luma = (rgb * torch.tensor(CHROMA_LUMA).reshape(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    direct = luma + separable_filter(rgb - luma, gaussian_kernels(sigma, blur_radius(sigma)))
    got = denoise_chroma(rgb, sigma)
    torch.testing.assert_close(got, direct, atol=1e-6, rtol=0)
    assert (got - rgb).abs().max() > 0.05  # it does blur


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
    torch.testing.assert_close(tone_curve(linear, gamma), expected, rtol=1e-6, atol=0)
    first = tone_curve(linear, gamma)[0, 0, 0, :5].tolist()
    assert first == pytest.approx([0.0, 1e-7 ** (1 / 2.2), 1.0, 1.0, 0.0])
