"""Tiled inference: tiles cover the image on the models' grid, blend without seams, any size round-trips."""

import numpy as np
import pytest
import torch

from pipeline.data.dataset import to_image, to_tensor
from pipeline.errors import ParamsError
from pipeline.falloff import correct_falloff, estimate_falloff
from pipeline.inference import (RestoreStopped, blend_weights, restore_image, restore_shrunk, restore_tensor,
                                restore_tiled, tile_spans)
from pipeline.models import ModelSpec, build_model

CPU = torch.device("cpu")


def _moire_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Stripes at an angle plus noise: content whose restoration depends on context."""
    y, x = np.mgrid[:height, :width]
    stripes = 127 + 90 * np.sin(0.45 * x + 0.2 * y)[..., None] * np.array([1.0, 0.6, 0.3])
    noise = np.random.default_rng(seed).normal(0, 20, (height, width, 3))
    return np.clip(stripes + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("length, tile, overlap, multiple", [
    (100, 48, 16, 4), (2160, 512, 32, 8), (3840, 512, 32, 32), (513, 512, 32, 8), (40, 48, 16, 4), (97, 32, 0, 1),
])
def test_tiles_cover_the_image_on_the_models_grid_with_at_least_the_overlap(length, tile, overlap, multiple):
    spans = tile_spans(length, tile, overlap, multiple)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(start % multiple == 0 for start, _ in spans)
    if len(spans) > 1:
        assert all(end - start == tile for start, end in spans[:-1])
        assert overlap < spans[-1][1] - spans[-1][0] <= tile
        assert sum(end - start for start, end in spans) - length < len(spans) * (overlap + multiple)  # no waste
    assert all(prev_end - start >= overlap for (_, prev_end), (start, _) in zip(spans, spans[1:]))
    coverage = np.zeros(length)
    for (start, end), weight in zip(spans, blend_weights(spans, overlap)):
        coverage[start:end] += weight
    assert coverage.min() > 0.4  # every pixel gets a real share of some tile, none is left to a dropped edge


def test_blend_ramps_of_neighbours_sum_to_one_across_the_overlap():
    spans = tile_spans(80, 48, 16)
    assert spans == [(0, 48), (32, 80)]  # the overlap is exactly 16
    first, second = blend_weights(spans, 16)
    np.testing.assert_allclose(first[32:] + second[:16], 1.0, atol=1e-6)
    assert first[-4:].max() == 0 and second[:4].max() == 0  # the dropped quarter at each cut edge


# Tolerance: the same network on a tile and on the whole image differs only where a tile's
# convolutions saw padding instead of neighbours; dropping and cross-fading the overlap leaves
# float differences far below one grey level, so after rounding to uint8 at most 1 level differs,
# in few pixels. Tiles without overlap break that by ten levels or more (checked as a control).
@pytest.mark.parametrize("spec", [ModelSpec("unet", 8, 2), ModelSpec("simple", 8, 4)])
def test_tiled_output_equals_whole_image_output(spec):
    model = build_model(spec, seed=0)
    image = _moire_like(100, 140)  # 3 × 4 tiles of 48 with 16 overlap
    whole = to_image(restore_tensor(model, to_tensor(image), CPU)).astype(int)
    tiled = restore_tiled(model, image, CPU, tile_size=48, overlap=16).astype(int)
    assert tiled.shape == whole.shape
    assert np.abs(tiled - whole).max() <= 1 and np.abs(tiled - whole).mean() < 0.05
    seams = restore_tiled(model, image, CPU, tile_size=48, overlap=0).astype(int)
    assert np.abs(seams - whole).max() >= 5


@pytest.mark.parametrize("spec", [ModelSpec("unet", 8, 2), ModelSpec("simple", 8, 4), ModelSpec("mscale", 8, 1)])
def test_the_served_layout_keeps_the_networks_own_numbers(spec):
    # restore copies the batch into the memory layout the architecture runs fastest in (channels_last for the U-Net
    # and the plain CNN on CPU); what comes out is the network's output on a plain tensor, to float rounding.
    model = build_model(spec, seed=0).eval()
    image = to_tensor(_moire_like(64, 96))
    with torch.no_grad():
        reference = model(image[None].contiguous()).clamp(0, 1)[0]
    restored = restore_tensor(model, image, CPU)
    assert torch.allclose(restored, reference, rtol=0, atol=1e-5)
    assert not torch.equal(restored, image)  # the untrained net does change the image


def test_tiled_mscale_stays_close_though_its_fusion_pools_over_the_whole_input():
    # mscale's squeeze-excitation averages over the whole input, so a tile cannot reproduce the
    # whole image's output exactly: a few levels differ, well below the seams of unblended tiles.
    model = build_model(ModelSpec("mscale", 8, 1), seed=0)
    image = _moire_like(100, 140)
    whole = to_image(restore_tensor(model, to_tensor(image), CPU)).astype(int)
    tiled = restore_tiled(model, image, CPU, tile_size=64, overlap=24).astype(int)
    seams = restore_tiled(model, image, CPU, tile_size=64, overlap=0).astype(int)
    assert np.abs(tiled - whole).max() <= 5 and np.abs(tiled - whole).mean() < 0.5
    assert np.abs(seams - whole).max() > 2 * np.abs(tiled - whole).max()


def test_batched_tiles_equal_single_tiles():
    model = build_model(ModelSpec("unet", 8, 2), seed=0)
    image = _moire_like(90, 130)
    one = restore_tiled(model, image, CPU, tile_size=48, overlap=16, batch_size=1).astype(int)
    four = restore_tiled(model, image, CPU, tile_size=48, overlap=16, batch_size=4).astype(int)
    assert np.abs(one - four).max() <= 1


@pytest.mark.parametrize("spec", [ModelSpec("unet", 8, 2), ModelSpec("unet", 8, 3), ModelSpec("mscale", 8, 1)])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (37, 45), (5, 150)])
def test_any_size_round_trips_shape_and_dtype(spec, size):
    model = build_model(spec, seed=0)
    image = _moire_like(*size)
    restored = restore_image(model, image, "cpu", tile_size=64, overlap=16)
    assert restored.shape == (*size, 3) and restored.dtype == np.uint8


def test_tile_settings_the_blending_cannot_use_are_refused():
    model = build_model(ModelSpec("simple", 8, 3), seed=0)
    with pytest.raises(ParamsError, match="overlap 24.*0 ≤ overlap < tile / 2"):
        restore_tiled(model, _moire_like(60, 60), CPU, tile_size=48, overlap=24)


def test_a_shrunk_restore_takes_the_wide_correction_from_the_small_size_and_keeps_full_size_detail():
    # A "model" that flattens whatever it sees to grey: what the shrunk restore removes is what the small photo holds
    # (the wide ramp); the 2-px checkerboard, which shrinking averages away, must come through untouched.
    height, width = 96, 128
    y, x = np.mgrid[:height, :width]
    ramp = 60 + 120 * x / width
    checker = 20 * ((x + y) % 2 * 2 - 1)
    image = np.repeat((ramp + checker)[..., None], 3, axis=2).astype(np.uint8)
    seen = []

    def flatten(small: np.ndarray) -> np.ndarray:
        seen.append(small.shape)
        return np.full_like(small, 128)

    restored = restore_shrunk(flatten, image, max_side=32).astype(float)
    assert seen == [(24, 32, 3)] and restored.shape == image.shape
    inner = restored[8:-8, 8:-8, 0]  # bicubic enlargement overshoots at the borders
    block_means = inner.reshape(inner.shape[0] // 8, 8, inner.shape[1] // 8, 8).mean(axis=(1, 3))
    assert np.ptp(block_means) < 4  # the ramp, 120 levels across, is gone
    assert np.abs(inner[:, 1:] - inner[:, :-1]).mean() == pytest.approx(40, abs=3)  # the checkerboard is not


def test_falloff_is_estimated_on_the_whole_photo_and_undone_on_what_the_model_restored():
    model = build_model(ModelSpec("unet", 8, 2), seed=0).eval()
    y, x = np.mgrid[:90, :150]
    page = np.where((y // 9) % 3 == 0, 40, 220)  # lines of "text" on a white page, darker towards the corners
    darkened = np.clip(page * (1 - 0.3 * ((x - 75) ** 2 + (y - 45) ** 2) / (75**2 + 45**2)), 0, 255)
    # a warm white page: not grey, which restore_image keeps grey after the falloff (the test above)
    photo = np.ascontiguousarray((darkened[..., None] * np.array([1.0, 0.97, 0.92])).astype(np.uint8))
    for max_side in (None, 50):
        plain = restore_image(model, photo, "cpu", tile_size=64, overlap=16, max_side=max_side)
        corrected = restore_image(model, photo, "cpu", tile_size=64, overlap=16, max_side=max_side, falloff=0.5)
        np.testing.assert_array_equal(corrected, correct_falloff(plain, photo, 0.5))  # the full-size photo's field
        assert estimate_falloff(photo).curvature < -0.1 and not np.array_equal(corrected, plain)
    np.testing.assert_array_equal(restore_image(model, photo, "cpu", falloff=0.0), restore_image(model, photo, "cpu"))


def test_max_side_restores_larger_photos_at_that_side_and_leaves_smaller_ones_as_they_were():
    sides, shapes = [], []

    class Recording(torch.nn.Module):
        """The real U-Net, noting the size of what it is given."""

        def __init__(self):
            super().__init__()
            self.net = build_model(ModelSpec("unet", 8, 2), seed=0)
            self.multiple = self.net.multiple

        def forward(self, batch):
            sides.append(tuple(batch.shape[-2:]))
            shapes.append(tuple(batch.shape))
            return self.net(batch)

    model = Recording()
    image = _moire_like(90, 150)
    full = restore_image(model, image, "cpu", tile_size=64, overlap=16)
    assert max(max(side) for side in sides) <= 64  # tiles of the full-size photo
    np.testing.assert_array_equal(restore_image(model, image, "cpu", tile_size=64, overlap=16, max_side=150), full)
    sides.clear()
    shrunk = restore_image(model, image, "cpu", tile_size=64, overlap=16, max_side=50)
    assert sides == [(30, 50)]  # the whole photo at a longer side of 50: one pass, no tiles
    assert shrunk.shape == image.shape and shrunk.dtype == np.uint8
    assert np.abs(shrunk.astype(int) - full).mean() > 1

    shapes.clear()
    restore_image(model, image, "cpu", tile_size=64, overlap=16, batch_size=2, max_side=112)
    # shrunk to 67×112, larger than a tile: restored in 2×2 tiles, two per batch
    assert [shape[0] for shape in shapes] == [2, 2] and max(max(shape[2:]) for shape in shapes) <= 64
    asked = []
    shapes.clear()
    with pytest.raises(RestoreStopped):  # asked before each batch of tiles, as at full size
        restore_image(model, image, "cpu", tile_size=64, overlap=16, batch_size=2, max_side=112,
                      should_stop=lambda: asked.append(len(shapes)) or len(asked) == 2)
    assert asked == [0, 1]  # stopped before the second batch of tiles


def test_a_grey_photo_comes_back_grey_and_a_colour_one_as_the_network_restores_it():
    net = build_model(ModelSpec("unet", 8, 2, correction="chroma"), seed=0).eval()
    for layer in net.modules():  # a network that tints: weights far from the near-identity it starts at
        if isinstance(layer, torch.nn.Conv2d):
            torch.nn.init.normal_(layer.weight, std=0.3, generator=torch.Generator().manual_seed(0))
    grey_input = np.repeat(_moire_like(40, 72)[..., :1], 3, axis=2)
    tinted = to_image(restore_tensor(net, to_tensor(grey_input), CPU))
    assert np.abs(tinted.astype(int) - tinted[..., :1]).max() > 2  # the network alone adds colour
    luma = tinted.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    whole = restore_image(net, grey_input, CPU)
    np.testing.assert_allclose(whole[..., 0], luma, atol=0.51)  # the tint dropped, the luma the network made kept
    tiled = restore_image(net, grey_input, CPU, tile_size=32, overlap=8)
    assert (whole == whole[..., :1]).all() and (tiled == tiled[..., :1]).all()  # grey out, whole or in tiles
    colour = _moire_like(40, 72)
    as_restored = to_image(restore_tensor(net, to_tensor(colour), CPU))
    np.testing.assert_array_equal(restore_image(net, colour, CPU), as_restored)  # colour: untouched by this
