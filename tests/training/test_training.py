import numpy as np
import pytest
import torch

from pipeline.config import TrainParams
from pipeline.errors import ParamsError
from pipeline.models import ModelSpec, build_model
from pipeline.training.device import resolve_device
from pipeline.training.losses import get_loss
from pipeline.training.loop import train_model


def _stripes(rng, n=6, size=32):
    """Pairs whose 'moiré' is a fixed stripe pattern added to smooth images: easy to learn."""
    pairs = []
    for _ in range(n):
        clean = np.clip(rng.normal(128, 30, (1, 1, 3)) + np.zeros((size, size, 3)), 0, 255).astype(np.uint8)
        moire = clean.astype(int)
        moire[:, ::2] += 40
        pairs.append((np.clip(moire, 0, 255).astype(np.uint8), clean))
    return pairs


def test_training_lowers_loss_and_checkpoints_each_epoch(tmp_path, rng):
    cfg = TrainParams(model="unet", channels=8, depth=2, epochs=4, batch_size=3, patch_size=16, lr=3e-3)
    pairs = _stripes(rng)
    epochs_seen = []
    history = train_model(build_model(ModelSpec("unet", 8, 2)), pairs, pairs[:2], cfg, 0,
                          torch.device("cpu"), tmp_path / "ckpt.pt", lambda s: epochs_seen.append(s.epoch))
    assert epochs_seen == [1, 2, 3, 4]
    assert history[-1].train_loss < history[0].train_loss
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert checkpoint["epoch"] == 4 and "optimizer" in checkpoint


def test_training_is_reproducible(tmp_path, rng):
    cfg = TrainParams(model="simple", channels=8, depth=3, epochs=1, batch_size=2, patch_size=16)
    pairs = _stripes(rng, n=4)
    runs = []
    for i in range(2):
        model = build_model(ModelSpec("simple", 8, 3), seed=0)
        train_model(model, pairs, pairs[:1], cfg, 5, torch.device("cpu"), tmp_path / f"c{i}.pt")
        runs.append(model.state_dict())
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key])


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ParamsError, match="no CUDA device is available; use 'auto' or 'cpu'"):
            resolve_device("cuda")


def test_unknown_loss_lists_valid_names():
    assert get_loss("mse") is not None
    with pytest.raises(ParamsError, match="unknown loss; choose one of mse, l1"):
        get_loss("ssim")


@pytest.mark.gpu
def test_training_step_on_cuda(tmp_path, rng):
    cfg = TrainParams(model="unet", channels=8, depth=2, epochs=1, batch_size=2, patch_size=16, device="cuda")
    history = train_model(build_model(ModelSpec("unet", 8, 2)), _stripes(rng, 4), _stripes(rng, 1), cfg, 0,
                          torch.device("cuda"), tmp_path / "c.pt")
    assert np.isfinite(history[0].train_loss)
