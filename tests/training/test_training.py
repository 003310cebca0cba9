import numpy as np
import pytest
import torch

from pipeline.config import TrainParams
from pipeline.errors import ParamsError
from pipeline.models import ModelSpec, build_model
from pipeline.training.device import resolve_device
from pipeline.training.losses import get_loss
from pipeline.training.batches import stored_pair_batches
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
    history = train_model(build_model(ModelSpec("unet", 8, 2)), stored_pair_batches(pairs, cfg, 0), pairs[:2], cfg, 0,
                          torch.device("cpu"), tmp_path / "ckpt.pt", lambda h: epochs_seen.append(h[-1].epoch))
    assert epochs_seen == [1, 2, 3, 4]
    assert history[-1].train_loss < history[0].train_loss
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert checkpoint["epoch"] == 4 and {"optimizer", "scheduler", "fingerprint", "history", "rng", "ema"} <= set(checkpoint)


def test_training_is_reproducible(tmp_path, rng):
    cfg = TrainParams(model="simple", channels=8, depth=3, epochs=1, batch_size=2, patch_size=16)
    pairs = _stripes(rng, n=4)
    runs = []
    for i in range(2):
        model = build_model(ModelSpec("simple", 8, 3), seed=0)
        train_model(model, stored_pair_batches(pairs, cfg, 5), pairs[:1], cfg, 5, torch.device("cpu"), tmp_path / f"c{i}.pt")
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
    with pytest.raises(ParamsError, match="unknown loss; choose one of mse, l1, charbonnier, fft"):
        get_loss("ssim")


class _Killed(Exception):
    pass


def test_a_killed_run_resumes_to_the_same_weights(tmp_path, rng):
    cfg = TrainParams(model="unet", channels=8, depth=2, epochs=3, batch_size=2, patch_size=16,
                      ema_decay=0.9, loss={"charbonnier": 1.0, "fft": 0.1})
    pairs = _stripes(rng, n=4)
    whole = build_model(ModelSpec("unet", 8, 2), seed=1)
    expected = train_model(whole, stored_pair_batches(pairs, cfg, 3), pairs[:1], cfg, 3, torch.device("cpu"), tmp_path / "whole.pt")

    def kill_after_two(history):
        if history[-1].epoch == 2:
            raise _Killed()

    interrupted = build_model(ModelSpec("unet", 8, 2), seed=1)
    with pytest.raises(_Killed):
        train_model(interrupted, stored_pair_batches(pairs, cfg, 3), pairs[:1], cfg, 3, torch.device("cpu"), tmp_path / "run.pt", kill_after_two)
    restarted = build_model(ModelSpec("unet", 8, 2), seed=1)  # a fresh process starts from the seed
    history = train_model(restarted, stored_pair_batches(pairs, cfg, 3), pairs[:1], cfg, 3, torch.device("cpu"), tmp_path / "run.pt")
    assert [h.epoch for h in history] == [1, 2, 3]
    assert [h.train_loss for h in history] == [h.train_loss for h in expected]
    for key, value in whole.state_dict().items():
        assert torch.equal(value, restarted.state_dict()[key]), key


def test_a_checkpoint_of_other_params_is_not_resumed(tmp_path, rng):
    pairs = _stripes(rng, n=4)
    cfg = TrainParams(model="simple", channels=8, depth=2, epochs=1, batch_size=2, patch_size=16)
    train_model(build_model(ModelSpec("simple", 8, 2)), stored_pair_batches(pairs, cfg, 0), pairs[:1], cfg, 0, torch.device("cpu"), tmp_path / "c.pt")
    longer = cfg.model_copy(update={"lr": 5e-4})
    history = train_model(build_model(ModelSpec("simple", 8, 2)), stored_pair_batches(pairs, longer, 0), pairs[:1], longer, 0, torch.device("cpu"), tmp_path / "c.pt")
    assert len(history) == 1 and torch.load(tmp_path / "c.pt", weights_only=True)["epoch"] == 1


def test_a_checkpoint_of_other_training_code_is_not_resumed(tmp_path, rng, monkeypatch):
    import pipeline.training.loop as loop

    pairs = _stripes(rng, n=4)
    cfg = TrainParams(model="simple", channels=8, depth=2, epochs=2, batch_size=2, patch_size=16)

    def epochs_trained() -> list[int]:
        """The epochs a run trains itself, not those a resumed checkpoint brought."""
        trained = []
        loop.train_model(build_model(ModelSpec("simple", 8, 2), seed=0), stored_pair_batches(pairs, cfg, 0), pairs[:1],
                         cfg, 0, torch.device("cpu"), tmp_path / "c.pt", on_epoch=lambda h: trained.append(h[-1].epoch))
        return trained

    assert epochs_trained() == [1, 2]
    assert epochs_trained() == []  # the same code: the finished run resumes after its last epoch
    monkeypatch.setattr(loop, "training_code_digest", lambda: "the training code after an edit")
    assert epochs_trained() == [1, 2]  # trained again from its seed


def test_early_stopping_keeps_the_best_epoch(tmp_path, rng, monkeypatch):
    import pipeline.training.loop as loop

    scores = iter([20.0, 25.0, 24.0, 23.0, 22.0, 21.0])
    snapshots = {}
    real_validate = loop.validate

    def scripted_validate(model, *args, **kwargs):
        snapshots[len(snapshots) + 1] = {k: v.clone() for k, v in model.state_dict().items()}
        return real_validate(model, *args, **kwargs)[0], next(scores)

    monkeypatch.setattr(loop, "validate", scripted_validate)
    cfg = TrainParams(model="simple", channels=8, depth=2, epochs=6, batch_size=2, patch_size=16, early_stop_patience=1)
    model = build_model(ModelSpec("simple", 8, 2), seed=0)
    history = loop.train_model(model, stored_pair_batches(_stripes(rng, n=4), cfg, 0), _stripes(rng, n=1), cfg, 0, torch.device("cpu"), tmp_path / "c.pt")
    assert [h.val_psnr for h in history] == [20.0, 25.0, 24.0]  # epoch 3 did not improve on 2: stop
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshots[2][key]), key


def test_losses_are_zero_on_equal_images_and_weighted():
    from pipeline.training.losses import LOSSES, multiscale_loss, weighted_loss

    x = torch.rand(2, 3, 16, 16)
    y = torch.rand(2, 3, 16, 16)
    for name, loss in LOSSES.items():
        assert float(loss(x, x)) < 2e-3, name  # Charbonnier's floor is its epsilon
        assert float(loss(x, y)) > float(loss(x, x)), name
    combined = weighted_loss({"mse": 2.0, "l1": 0.5})
    expected = 2.0 * torch.nn.functional.mse_loss(x, y) + 0.5 * torch.nn.functional.l1_loss(x, y)
    torch.testing.assert_close(combined(x, y), expected)
    pyramid = [y, torch.nn.functional.avg_pool2d(y, 2), torch.nn.functional.avg_pool2d(y, 4)]
    assert float(multiscale_loss(pyramid, y, combined, 0.5)) == pytest.approx(0.0, abs=1e-6)


def test_loss_names_in_params_are_the_implemented_ones():
    from typing import get_args

    from pipeline.config import LossName
    from pipeline.training.losses import LOSSES

    assert set(get_args(LossName)) == set(LOSSES)


@pytest.mark.gpu
def test_training_step_on_cuda(tmp_path, rng):
    cfg = TrainParams(model="unet", channels=8, depth=2, epochs=1, batch_size=2, patch_size=16, device="cuda")
    device = torch.device("cuda")
    history = train_model(build_model(ModelSpec("unet", 8, 2)), stored_pair_batches(_stripes(rng, 4), cfg, 0, device),
                          _stripes(rng, 1), cfg, 0, device, tmp_path / "c.pt")
    assert np.isfinite(history[0].train_loss)


def test_training_on_pairs_synthesised_on_the_fly_is_reproducible(tmp_path, tiny_params, rng):
    from pipeline.training.batches import SyntheticBatches

    cfg = TrainParams(model="unet", channels=8, depth=2, epochs=2, batch_size=2, patch_size=32, synthetic_pairs_per_epoch=4)
    weights, fingerprints = [], []
    for run in range(2):
        batches = SyntheticBatches(tiny_params.synthesize, 4, cfg.patch_size, cfg.batch_size, seed=1, device=torch.device("cpu"))
        assert batches.steps_per_epoch == 2
        first = list(batches.epoch(1))
        assert [tuple(m.shape) for m, _ in first] == [(2, 3, 32, 32)] * 2
        assert not torch.equal(first[0][0], next(iter(batches.epoch(2)))[0])  # each epoch renders new pairs
        model = build_model(ModelSpec("unet", 8, 2), seed=0)
        history = train_model(model, batches, _stripes(rng, 1), cfg, 1, torch.device("cpu"), tmp_path / f"{run}.pt")
        assert [h.epoch for h in history] == [1, 2] and np.isfinite(history[-1].train_loss)
        weights.append(model.state_dict())
        fingerprints.append(torch.load(tmp_path / f"{run}.pt", weights_only=True)["fingerprint"])
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    other = SyntheticBatches(tiny_params.synthesize.model_copy(update={"preset": "coarse"}), 4, 32, 2, 1, torch.device("cpu"))
    assert other.digest() != batches.digest()  # other physics: a checkpoint would not be resumed
    elsewhere = tiny_params.synthesize.model_copy(update={"workers": 7, "dask_address": "tcp://10.0.0.1:8786"})
    assert SyntheticBatches(elsewhere, 4, 32, 2, 1, torch.device("cpu")).digest() == batches.digest()  # same pairs


def test_a_checkpoint_scored_on_other_val_pairs_is_not_resumed_and_says_so(tmp_path, rng, caplog):
    pairs = _stripes(rng, n=4)
    cfg = TrainParams(model="simple", channels=8, depth=2, epochs=1, batch_size=2, patch_size=16)
    train_model(build_model(ModelSpec("simple", 8, 2)), stored_pair_batches(pairs, cfg, 0), pairs[:1], cfg, 0,
                torch.device("cpu"), tmp_path / "c.pt")
    trained = []
    with caplog.at_level("INFO", logger="pipeline.training"):
        train_model(build_model(ModelSpec("simple", 8, 2)), stored_pair_batches(pairs, cfg, 0), pairs[1:3], cfg, 0,
                    torch.device("cpu"), tmp_path / "c.pt", on_epoch=lambda h: trained.append(h[-1].epoch))
    assert trained == [1]  # the history held val PSNR of another val split: trained afresh
    assert f"{tmp_path / 'c.pt'} was made for other params, data or training code: training afresh" in caplog.text


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, rng, monkeypatch):
    import pipeline.training.loop as loop

    real_loss, calls = loop.multiscale_loss, []

    def loss_going_nan(*args):
        calls.append(1)
        value = real_loss(*args)
        return value * float("nan") if len(calls) == 4 else value  # epoch 2 (2 steps per epoch), step 1

    monkeypatch.setattr(loop, "multiscale_loss", loss_going_nan)
    cfg = TrainParams(model="simple", channels=8, depth=2, epochs=3, batch_size=2, patch_size=16)
    pairs = _stripes(rng, n=4)
    from pipeline.errors import DemoireError

    with pytest.raises(DemoireError, match=r"training diverged: loss is nan at epoch 2, step 1; .*c\.pt keeps the last good epoch"):
        train_model(build_model(ModelSpec("simple", 8, 2)), stored_pair_batches(pairs, cfg, 0), pairs[:1], cfg, 0,
                    torch.device("cpu"), tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt", weights_only=True)["epoch"] == 1
    calls.clear()
    cfg = cfg.model_copy(update={"resume": False})  # afresh, so c.pt is another run's: was named as this run's
    with pytest.raises(DemoireError, match=r"^training diverged: loss is nan at epoch 2, step 1; .*c\.pt keeps"):
        train_model(build_model(ModelSpec("simple", 8, 2)), stored_pair_batches(pairs, cfg, 0), pairs[:1], cfg, 0,
                    torch.device("cpu"), tmp_path / "c.pt")
    calls[:] = [1, 1, 1]  # the very first step goes NaN
    with pytest.raises(DemoireError, match=r"^training diverged: loss is nan at epoch 1, step 0; no epoch had "
                                           r"finished; lower train.lr$"):
        train_model(build_model(ModelSpec("simple", 8, 2)), stored_pair_batches(pairs, cfg, 0), pairs[:1], cfg, 0,
                    torch.device("cpu"), tmp_path / "other.pt")


def test_compile_is_not_used_on_the_cpu(caplog):
    from torch._dynamo.eval_frame import OptimizedModule

    from pipeline.training.loop import World, wrap_for_training

    with caplog.at_level("INFO", logger="pipeline.training"):
        net = wrap_for_training(build_model(ModelSpec("simple", 8, 2)), TrainParams(compile=True), World(),
                                torch.device("cpu"))
    assert not isinstance(net, OptimizedModule)
    assert "train.compile: not on cpu (torch.compile is used on CUDA only)" in caplog.text


@pytest.mark.gpu
def test_compiled_training_matches_eager_training(tmp_path, rng):
    pairs = _stripes(rng, n=4)
    device = torch.device("cuda")
    results = {}
    for compiled in (False, True):
        cfg = TrainParams(model="unet", channels=8, depth=2, epochs=2, batch_size=2, patch_size=16, compile=compiled,
                          amp="off", device="cuda")
        model = build_model(ModelSpec("unet", 8, 2), seed=0)
        history = train_model(model, stored_pair_batches(pairs, cfg, 0, device), pairs[:1], cfg, 0, device,
                              tmp_path / f"{compiled}.pt")
        model.cpu()
        results[compiled] = (history, model.state_dict())
    (eager, eager_weights), (compiled, compiled_weights) = results[False], results[True]
    assert [h.val_psnr for h in compiled] == pytest.approx([h.val_psnr for h in eager], abs=0.05)
    for key, value in eager_weights.items():
        torch.testing.assert_close(compiled_weights[key], value, rtol=1e-3, atol=1e-4, msg=key)


def test_psnr_loss_is_minus_the_mean_psnr_and_counts_every_image_alike():
    from pipeline.training.losses import negative_psnr

    target = torch.full((2, 3, 8, 8), 0.5)
    pred = target.clone()
    pred[0] += 0.1  # MSE 1e-2: 20 dB
    pred[1] += 0.01  # MSE 1e-4: 40 dB
    assert float(negative_psnr(pred, target)) == pytest.approx(-30.0, abs=1e-3)
    pred.requires_grad_(True)
    negative_psnr(pred, target).backward()
    # Mean MSE would push the 20 dB image's pixels 10× harder; in dB the 40 dB image's pixels get 10× the push,
    # each image's total effect on its own PSNR being the same.
    assert float(pred.grad[1].abs().mean() / pred.grad[0].abs().mean()) == pytest.approx(10.0, rel=1e-3)
