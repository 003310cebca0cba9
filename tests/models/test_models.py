import pytest
import torch

from pipeline.errors import ModelNotFoundError, ParamsError
from torch import nn

from pipeline.models import MODEL_BUILDERS, ModelSpec, build_model, load_model, save_model
from pipeline.models.complexity import count_macs
from pipeline.models.mscale import image_pyramid, pyramid_sizes


@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
@pytest.mark.parametrize("size", [(17, 23), (64, 64), (33, 100)])
def test_any_input_size_gives_same_output_size(name, size):
    model = build_model(ModelSpec(name, 8, 3)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, *size)


def test_untrained_residual_models_start_near_identity():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    model = build_model(ModelSpec("unet", 8, 2)).eval()
    with torch.no_grad():
        assert (model(x) - x).abs().mean() < 0.2


def test_unknown_model_lists_valid_names():
    with pytest.raises(ParamsError, match="unknown model; choose one of simple, unet, mscale"):
        build_model(ModelSpec("resnet", 8, 3))


def test_save_and_load_roundtrip_with_weights_only(tmp_path):
    spec = ModelSpec("unet", 8, 2)
    model = build_model(spec)
    save_model(model, spec, tmp_path)
    loaded, loaded_spec = load_model(tmp_path)
    assert loaded_spec == spec
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    torch.load(tmp_path / "model.pt", weights_only=True)  # no pickled code inside


def test_the_deepest_and_the_widest_model_params_allow_load_again(tmp_path):
    from pipeline.config import TrainParams, largest_allowed
    deepest = ModelSpec("simple", 4, largest_allowed(TrainParams, "depth"))
    widest = ModelSpec("simple", largest_allowed(TrainParams, "channels"), 1)
    for spec in (deepest, widest):
        save_model(build_model(spec, seed=0), spec, tmp_path / spec.name)
        assert load_model(tmp_path / spec.name)[1] == spec
    assert (deepest.depth, widest.channels) == (64, 512)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model in"):
        load_model(tmp_path)


def test_seeded_initialisation_is_reproducible():
    a = build_model(ModelSpec("unet", 8, 2), seed=3).state_dict()
    b = build_model(ModelSpec("unet", 8, 2), seed=3).state_dict()
    c = build_model(ModelSpec("unet", 8, 2), seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("size", [(37, 53), (64, 64)])
def test_mscale_keeps_size_and_stays_finite(size):
    model = build_model(ModelSpec("mscale", 8, 1), seed=0).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))
    assert out.shape == (1, 3, *size)
    assert torch.isfinite(out).all()


def test_mscale_multiscale_outputs_are_ceil_halvings_matching_the_target_pyramid():
    model = build_model(ModelSpec("mscale", 8, 1), seed=0).eval()
    x = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        outputs = model.forward_multiscale(x)
        full = model(x)
    expected = [(37, 53), (19, 27), (10, 14)]
    assert pyramid_sizes(37, 53) == expected
    assert [tuple(o.shape) for o in outputs] == [(2, 3, h, w) for h, w in expected]
    assert [tuple(t.shape[-2:]) for t in image_pyramid(x)] == expected
    torch.testing.assert_close(outputs[0], full)


def test_mscale_seeded_initialisation_and_roundtrip(tmp_path):
    spec = ModelSpec("mscale", 8, 1)
    a, b = build_model(spec, seed=3), build_model(spec, seed=3)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    save_model(a, spec, tmp_path)
    loaded, loaded_spec = load_model(tmp_path)
    assert loaded_spec == spec
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), a.eval()(x))


def test_mscale_backward_reaches_every_parameter_through_the_multiscale_outputs():
    model = build_model(ModelSpec("mscale", 8, 1), seed=0)
    x, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    loss = sum(torch.mean((out - t) ** 2) for out, t in zip(model.forward_multiscale(x), image_pyramid(target)))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_mscale_rejects_depth_out_of_range():
    with pytest.raises(ParamsError, match="mscale model takes 1 to 8"):
        build_model(ModelSpec("mscale", 8, 0))


def test_count_macs_of_one_convolution_is_the_hand_count():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, 16, 16) == 16 * 16 * 8 * 3 * 9


@pytest.mark.parametrize("name", ["simple", "unet"])
def test_count_macs_of_fully_convolutional_models_scales_with_pixels(name):
    model = build_model(ModelSpec(name, 8, 3))
    assert count_macs(model, 64, 96) == 6 * count_macs(model, 32, 32)


def test_count_macs_of_mscale_scales_with_pixels_up_to_its_constant_attention_cost():
    # The scale weights come from a tiny per-image MLP whose cost does not grow with the image.
    model = build_model(ModelSpec("mscale", 8, 1))
    small, large = count_macs(model, 64, 64), count_macs(model, 128, 256)
    assert large == pytest.approx(8 * small, rel=1e-3)
    assert large != 8 * small


def test_the_same_weights_saved_twice_are_the_same_bytes(tmp_path):
    spec = ModelSpec("unet", 8, 2)
    model = build_model(spec, seed=0)
    save_model(model, spec, tmp_path / "one")
    save_model(model, spec, tmp_path / "two")
    assert (tmp_path / "one" / "model.pt").read_bytes() == (tmp_path / "two" / "model.pt").read_bytes()
