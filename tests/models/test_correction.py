"""`train.correction: chroma`: the network changes only the colour of its input, never its luma."""

import json

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
def test_an_exported_chroma_model_is_the_same_model(tmp_path, fmt, name):
    from pipeline.export import TOLERANCE, ExportedModel, export_model

    spec = model_spec("unet", 8, 2, "chroma")
    model = build_model(spec, seed=0).eval()
    export_model(model, spec, fmt, tmp_path / name, spatial_multiple(model))
    exported = ExportedModel(tmp_path / name)
    x = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        assert exported.spec == spec and (exported(x) - model(x)).abs().max() < TOLERANCE
