import pytest
import torch

from pipeline.errors import ModelNotFoundError, ParamsError
from pipeline.models import MODEL_BUILDERS, ModelSpec, build_model, load_model, save_model


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
    with pytest.raises(ParamsError, match="unknown model; choose one of simple, unet"):
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


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model in"):
        load_model(tmp_path)


def test_seeded_initialisation_is_reproducible():
    a = build_model(ModelSpec("unet", 8, 2), seed=3).state_dict()
    b = build_model(ModelSpec("unet", 8, 2), seed=3).state_dict()
    c = build_model(ModelSpec("unet", 8, 2), seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
