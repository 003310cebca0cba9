"""`train.correction`: the network changes only the colour of its input (`chroma`), and with `correction_width` only
the correction's detail and mean."""

import json

import numpy as np
import pytest
import torch

from pipeline.errors import ParamsError
from pipeline.inference import restore_image, spatial_multiple
from pipeline.models import ModelSpec, build_model, load_model, model_spec, save_model
from pipeline.models.correction import RGB_TO_YCBCR, chroma_projection
from pipeline.models.mscale import image_pyramid


def _luma(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("c,bchw->bhw", RGB_TO_YCBCR[0].float(), image)


def _chroma(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("kc,bchw->bkhw", RGB_TO_YCBCR[1:].float(), image)


def test_the_projection_drops_luma_and_keeps_both_colour_differences():
    difference = torch.randn(2, 3, 5, 7)
    projected = torch.einsum("ij,bjhw->bihw", chroma_projection(), difference)
    assert _luma(projected).abs().max() < 1e-6
    torch.testing.assert_close(_chroma(projected), _chroma(difference), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["simple", "unet", "mscale"])
def test_a_chroma_model_keeps_its_inputs_luma_and_changes_its_colour(name):
    x = torch.rand(2, 3, 40, 36)
    full = build_model(ModelSpec(name, 8, 2), seed=3).eval()
    chroma = build_model(ModelSpec(name, 8, 2, "chroma"), seed=3).eval()
    with torch.no_grad():
        restored, unrestricted = chroma(x), full(x)
    assert _luma(restored - x).abs().max() < 1e-5
    torch.testing.assert_close(_chroma(restored - x), _chroma(unrestricted - x), atol=1e-5, rtol=0)  # same weights
    assert _chroma(restored - x).abs().max() > 1e-3
    assert spatial_multiple(chroma) == spatial_multiple(full)


def test_a_chroma_mscale_supervises_every_scale_without_luma():
    x = torch.rand(1, 3, 64, 64)
    model = build_model(ModelSpec("mscale", 8, 2, "chroma"), seed=0)
    outputs = model.forward_multiscale(x)
    assert len(outputs) == 3
    for output, scaled in zip(outputs, image_pyramid(x)):
        assert output.shape == scaled.shape and _luma(output - scaled).abs().max() < 1e-5


def test_a_chroma_model_round_trips_and_an_older_spec_without_correction_loads_as_full(tmp_path):
    spec = model_spec("unet", 8, 2, "chroma")
    model = build_model(spec, seed=0)
    save_model(model, spec, tmp_path / "chroma")
    loaded, loaded_spec = load_model(tmp_path / "chroma")
    assert loaded_spec == spec and json.loads((tmp_path / "chroma" / "model.json").read_text())["correction"] == "chroma"
    image = (torch.rand(50, 70, 3) * 255).to(torch.uint8).numpy()
    assert (restore_image(loaded, image, "cpu", 32, 8) == restore_image(model.eval(), image, "cpu", 32, 8)).all()

    old = tmp_path / "old"
    save_model(build_model(ModelSpec("unet", 8, 2), seed=0), ModelSpec("unet", 8, 2), old)
    (old / "model.json").write_text(json.dumps({"name": "unet", "channels": 8, "depth": 2}))
    assert load_model(old)[1] == ModelSpec("unet", 8, 2, "full")


def test_an_unknown_correction_is_a_params_error():
    with pytest.raises(ParamsError, match="train.correction = 'luma': choose one of full, chroma"):
        model_spec("unet", correction="luma")


@pytest.mark.parametrize("fmt, name", [("onnx", "model.onnx"), ("torchscript", "model.pt")])
@pytest.mark.parametrize("width", [0.0, 6.0])
def test_an_exported_chroma_model_is_the_same_model(tmp_path, fmt, name, width):
    from pipeline.export import TOLERANCE, ExportedModel, export_model

    spec = model_spec("unet", 8, 2, "chroma", width)
    model = build_model(spec, seed=0).eval()
    export_model(model, spec, fmt, tmp_path / name, spatial_multiple(model))
    exported = ExportedModel(tmp_path / name)
    x = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        assert exported.spec == spec and (exported(x) - model(x)).abs().max() < TOLERANCE
    image = (torch.rand(70, 90, 3) * 255).to(torch.uint8).numpy()  # tiled: the export narrows the whole image too
    tiled = restore_image(exported, image, "cpu", 32, 8).astype(int) - restore_image(model, image, "cpu", 32, 8)
    assert np.abs(tiled).max() <= 1


class _Adds(torch.nn.Module):
    """A stand-in network whose correction is a fixed 3×H×W map."""

    def __init__(self, correction: torch.Tensor):
        super().__init__()
        self.correction = correction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.correction


def _restricted_correction(correction: torch.Tensor, width: float, chroma: bool = False) -> torch.Tensor:
    from pipeline.models.correction import RestrictedCorrection

    x = torch.rand(1, 3, *correction.shape[-2:])
    with torch.no_grad():
        return (RestrictedCorrection(_Adds(correction), chroma=chroma, width=width)(x) - x)[0]


def test_a_width_keeps_the_correction_narrower_than_its_gaussian_and_its_mean_as_scipy_computes_them():
    from scipy.ndimage import gaussian_filter

    correction = torch.randn(3, 70, 90) * 0.05
    kept = _restricted_correction(correction, 6.0)
    wide = torch.from_numpy(gaussian_filter(correction.double().numpy(), sigma=(0, 6.0, 6.0), mode="nearest",
                                            truncate=3.0)).float()
    expected = correction - wide + wide.mean(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(kept, expected, atol=2e-6, rtol=0)


def test_a_wide_blur_computed_at_a_quarter_of_its_sigma_is_within_a_few_percent_of_the_exact_one():
    from scipy.ndimage import gaussian_filter

    from pipeline.models.correction import GaussianBlur

    rows, columns = torch.meshgrid(torch.arange(256.0), torch.arange(320.0), indexing="ij")
    # bands of 57- and 144-pixel periods (the blur keeps 21 % and 78 % of them) and fine stripes it removes
    image = (torch.sin(columns / 9) + 0.5 * torch.cos(rows / 23) + torch.sin(2 * torch.pi * (rows + columns) / 5))
    blur = GaussianBlur(16.0)
    assert blur.factor == 4
    exact = torch.from_numpy(gaussian_filter(image[None, None].double().numpy(), sigma=(0, 0, 16, 16),
                                             mode="nearest", truncate=3.0))
    inner = (..., slice(48, -48), slice(48, -48))  # 3σ from the edges, which each pads its own way
    error = blur(image[None, None]).double()[inner] - exact[inner]
    assert error.pow(2).mean().sqrt() < 0.04 * exact[inner].pow(2).mean().sqrt()


def test_a_width_drops_a_smooth_colour_ramp_but_keeps_its_mean_and_fine_stripes():
    columns = torch.arange(200, dtype=torch.float32)
    ramp = (columns / 199 * 0.2 - 0.05).expand(3, 120, 200)  # a cast that changes across the frame
    stripes = 0.03 * torch.sin(2 * torch.pi * columns / 8).expand(3, 120, 200)  # moiré of an 8-pixel period
    kept = _restricted_correction(ramp + stripes, 16.0)
    inner = (slice(None), slice(None), slice(48, -48))  # away from the edges, where the ramp is linear
    torch.testing.assert_close(kept.mean(), (ramp + stripes).mean(), atol=1e-6, rtol=0)
    # the ramp (0.1 across these columns) leaves a constant; the stripes pass within a percent of their amplitude
    left = kept[inner] - stripes[inner]
    assert left.max() - left.min() < 0.03 * 0.01
    assert (_restricted_correction(ramp + stripes, 0.0) - (ramp + stripes)).abs().max() < 1e-6


@pytest.mark.parametrize("cast", ["gain", "offset"])
def test_a_chroma_model_with_a_width_changes_neither_luma_nor_wide_colour(cast):
    x = torch.rand(1, 3, 96, 96)
    model = build_model(ModelSpec("unet", 8, 2, "chroma", 8.0, cast), seed=3).eval()
    with torch.no_grad():
        correction = model(x) - x
    assert _luma(correction).abs().max() < 1e-5
    assert _chroma(correction).abs().max() > 1e-4
    from pipeline.models.correction import GaussianBlur

    wide = GaussianBlur(8.0)(correction) - correction.mean(dim=(-2, -1), keepdim=True)
    assert wide.abs().max() < 0.1 * correction.abs().max()


@pytest.mark.parametrize("chroma", [False, True])
def test_a_gain_cast_leaves_black_black_and_keeps_the_corrections_mean(chroma):
    """A colour cast is a gain, as a white balance is: black bars stay black, brighter pixels take more of it."""
    from pipeline.models.correction import RestrictedCorrection

    x = torch.zeros(1, 3, 64, 96)
    x[..., 48:] = torch.tensor([0.6, 0.4, 0.2])[:, None, None]  # a black half, then a warm colour
    cast = torch.tensor([0.03, 0.0, -0.02])[:, None, None].expand(3, 64, 96)  # a wide, uniform correction
    corrections = {}
    for kind in ("gain", "offset"):
        model = RestrictedCorrection(_Adds(cast), chroma=chroma, width=8.0, cast=kind)
        with torch.no_grad():
            corrections[kind] = (model(x) - x)[0]
    expected_mean = chroma_projection() @ cast[:, 0, 0] if chroma else cast[:, 0, 0]
    for kind, correction in corrections.items():
        torch.testing.assert_close(correction.mean(dim=(1, 2)), expected_mean, atol=1e-6, rtol=0)
    gain = corrections["gain"]
    assert gain[..., :48].abs().max() < 1e-7  # black stays black
    if chroma:
        assert _luma(gain[None]).abs().max() < 1e-6
    else:  # the lit half takes twice the mean: its gain is the mean over half the image's light
        torch.testing.assert_close(gain[:, 32, 60], 2 * cast[:, 0, 0], atol=1e-6, rtol=0)
    assert corrections["offset"][..., :48].abs().amax(dim=(1, 2)).max() > 0.01  # an offset lifts black


def test_an_unknown_cast_is_a_params_error():
    with pytest.raises(ParamsError, match="correction_cast = 'scale': choose one of gain, offset"):
        model_spec("unet", correction_cast="scale")


def test_an_mscale_with_a_width_restricts_every_scale_at_its_own_sigma():
    from pipeline.models.correction import GaussianBlur, MultiScaleRestrictedCorrection

    x = torch.rand(1, 3, 64, 64)
    model = build_model(ModelSpec("mscale", 8, 2, "full", 8.0), seed=0)
    assert isinstance(model, MultiScaleRestrictedCorrection)
    with torch.no_grad():
        unrestricted = model.net.forward_multiscale(x)
        outputs = model.forward_multiscale(x)
    for level, (output, raw, scaled) in enumerate(zip(outputs, unrestricted, image_pyramid(x))):
        correction = raw - scaled
        wide = GaussianBlur(8.0 / 2**level)(correction)
        expected = scaled + correction - wide + wide.mean(dim=(-2, -1), keepdim=True)
        torch.testing.assert_close(output, expected, atol=1e-6, rtol=0)


def test_a_width_round_trips_and_an_older_spec_loads_without_one(tmp_path):
    spec = model_spec("unet", 8, 2, "chroma", 16)
    model = build_model(spec, seed=0)
    save_model(model, spec, tmp_path / "m")
    loaded, loaded_spec = load_model(tmp_path / "m")
    written = json.loads((tmp_path / "m" / "model.json").read_text())
    assert loaded_spec == spec and written["correction_width"] == 16.0 and written["correction_cast"] == "gain"
    image = (torch.rand(70, 90, 3) * 255).to(torch.uint8).numpy()
    assert (restore_image(loaded, image, "cpu", 48, 8) == restore_image(model.eval(), image, "cpu", 48, 8)).all()
    (tmp_path / "m" / "model.json").write_text(json.dumps({"name": "unet", "channels": 8, "depth": 2,
                                                           "correction": "chroma"}))
    assert load_model(tmp_path / "m")[1] == ModelSpec("unet", 8, 2, "chroma", 0.0, "offset")
    del written["correction_cast"]  # a spec written before the gain: its mean applied as an offset, as trained
    (tmp_path / "m" / "model.json").write_text(json.dumps(written))
    assert load_model(tmp_path / "m")[1] == ModelSpec("unet", 8, 2, "chroma", 16.0, "offset")


def test_a_negative_width_is_a_params_error():
    with pytest.raises(ParamsError, match=r"train.correction_width = -1: must be ≥ 0"):
        model_spec("unet", correction_width=-1)


class _Brightens(torch.nn.Module):
    """A stand-in network whose correction follows the content pixel by pixel, so tiles see what the whole does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * (x - 0.25)


class _PerTile(torch.nn.Module):
    """A model restored tile by tile as a whole: what narrowing each tile alone would give."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@pytest.mark.parametrize("chroma, cast", [(False, "offset"), (False, "gain"), (True, "gain")])
def test_a_tiled_restoration_narrows_the_whole_image_once_as_an_untiled_one_does(chroma, cast):
    """The mean and the wide part are the whole image's, not each tile's: tiles give the untiled result."""
    from pipeline.models.correction import RestrictedCorrection

    rows, columns = torch.meshgrid(torch.arange(120.0), torch.arange(200.0), indexing="ij")
    # content brighter to the right (so is the correction: its mean differs from tile to tile) with fine stripes,
    # each channel its own share of it (so a chroma correction has colour to change)
    content = 0.2 + 0.5 * columns / 199 + 0.1 * torch.sin(2 * torch.pi * (columns + rows) / 6)
    image = (content[..., None] * torch.tensor([1.0, 0.8, 0.5]) * 255).round().to(torch.uint8).numpy()
    model = RestrictedCorrection(_Brightens(), chroma=chroma, width=8.0, cast=cast).eval()

    whole = restore_image(model, image, "cpu", 256, 16).astype(int)
    tiled = restore_image(model, image, "cpu", 64, 16).astype(int)
    per_tile = restore_image(_PerTile(model), image, "cpu", 64, 16).astype(int)
    assert np.abs(tiled - whole).max() <= 1  # uint8 rounding
    if not chroma:  # (this correction's colour follows the content, as a gain does: per tile it comes out alike)
        assert np.abs(per_tile - whole).max() > 5  # what the whole-image narrowing avoids
