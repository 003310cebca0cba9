"""DDP through torchrun with 2 CPU processes (gloo), against one process with the same global batch."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from pipeline.config import load_params
from pipeline.errors import InputDataError
from pipeline.models import load_model
from pipeline.io import write_png
from pipeline.training.stage import run_training


def _dataset(root, rng, n_train=8, n_val=2, size=32):
    """PNG pairs with a stripe 'moiré' and a pairs index splitting them into train and val."""
    rows = []
    for i in range(n_train + n_val):
        clean = rng.integers(60, 200, (size, size, 3), dtype=np.uint8)
        moire = clean.copy()
        moire[:, ::3] += 40
        for kind, image in (("moire", moire), ("clean", clean)):
            write_png(root / kind / f"{i}.png", image)
        rows.append({"moire_path": f"moire/{i}.png", "clean_path": f"clean/{i}.png",
                     "split": "train" if i < n_train else "val"})
    pd.DataFrame(rows).to_parquet(root / "pairs.parquet")


def _train(tmp_path, name, processes, batch_size):
    """Run the training stage with `processes` DDP processes; return the model folder."""
    params_path = tmp_path / f"{name}.yaml"
    params_path.write_text(yaml.safe_dump({"seed": 3, "train": {
        "model": "mscale", "channels": 4, "depth": 1, "epochs": 2, "batch_size": batch_size,
        "patch_size": 16, "lr": 2e-3, "device": "cpu", "processes": processes}}))
    out = tmp_path / name
    params = load_params(params_path)
    params_path.unlink()  # the ranks train on the params as resolved here, not on a file
    run_training(params, tmp_path / "data", tmp_path / "data" / "pairs.parquet",
                 out, out / "history.csv")
    return out


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_process_with_their_combined_batch(tmp_path, rng, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # the live MLflow run goes to a store here, not the checkout's
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _dataset(tmp_path / "data", rng)
    ddp = _train(tmp_path, "ddp", processes=2, batch_size=2)
    single = _train(tmp_path, "single", processes=1, batch_size=4)

    history = pd.read_csv(ddp / "history.csv")
    assert list(history.epoch) == [1, 2]  # written once, by rank 0
    assert torch.load(ddp / "checkpoint.pt", weights_only=True)["epoch"] == 2
    ddp_model, spec = load_model(ddp)
    single_model, _ = load_model(single)
    assert spec.name == "mscale"
    # Same samples, same crops, gradients averaged over the ranks: equal up to summation order.
    for (key, a), b in zip(ddp_model.state_dict().items(), single_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=key)
    np.testing.assert_allclose(history.val_psnr, pd.read_csv(single / "history.csv").val_psnr, rtol=1e-4)

    from pipeline.training.telemetry import recorded_run_id

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = recorded_run_id(ddp)  # rank 0 alone streamed: one run, each epoch once
    assert [m.step for m in client.get_metric_history(run, "val_psnr")] == [1, 2]
    assert len(client.search_runs([client.get_run(run).info.experiment_id])) == 2  # the ddp and single trainings


def _params_file(tmp_path, processes, epochs=2):
    path = tmp_path / f"p{processes}.yaml"
    path.write_text(yaml.safe_dump({"seed": 3, "train": {
        "model": "unet", "channels": 4, "depth": 2, "epochs": epochs, "batch_size": 1, "patch_size": 16,
        "device": "cpu", "processes": processes, "num_workers": 0}}))
    return path


def test_more_processes_than_train_pairs_is_one_line_before_launching(tmp_path, rng):
    _dataset(tmp_path / "data", rng, n_train=2)
    with pytest.raises(InputDataError, match=r"^train.processes = 3: more than the 2 train pairs in .*pairs.parquet; "
                                             r"each process trains on pairs of its own, so use at most 2$"):
        run_training(load_params(_params_file(tmp_path, 3)), tmp_path / "data", tmp_path / "data" / "pairs.parquet",
                     tmp_path / "out", tmp_path / "out" / "history.csv")
    assert not (tmp_path / "out").exists()


def _demoire_train(tmp_path, params, *launcher):
    """`demoire train` (under `launcher`, e.g. torchrun, if given) on the test data, in its own session."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    return subprocess.Popen([*(launcher or [sys.executable]), "-m", "pipeline.cli", "train", "--params", str(params),
                             "--data", str(tmp_path / "data"), "--pairs", str(tmp_path / "data" / "pairs.parquet"),
                             "--out", str(tmp_path / "out")],
                            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _only_run(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("demoire").experiment_id])
    return run


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_ddp_training_stops_every_process_it_started(tmp_path, rng, signum):
    """`kill` (or the out-of-memory killer) on `demoire train` stopped only it: torchrun and its ranks trained on
    unseen, wrote the model and ended the MLflow run FINISHED."""
    _dataset(tmp_path / "data", rng)
    trainer = _demoire_train(tmp_path, _params_file(tmp_path, 2, epochs=100_000))
    started = []
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "out" / "history.csv").exists():  # rank 0 has finished an epoch
            assert trainer.poll() is None, trainer.communicate()[0]
            assert time.monotonic() < deadline, "no epoch finished in 180 s"
            time.sleep(0.5)
        started = psutil.Process(trainer.pid).children(recursive=True)
        assert len(started) >= 3  # torchrun and its two ranks
        trainer.send_signal(signum)
        output = trainer.communicate(timeout=120)[0]
        _, alive = psutil.wait_procs(started, timeout=90)
        assert not alive, [p.cmdline() for p in alive]
    finally:  # whatever failed above, nothing of it trains on
        leftovers = list(started)
        if trainer.poll() is None:
            parent = psutil.Process(trainer.pid)
            leftovers += [parent, *parent.children(recursive=True)]
        for process in leftovers:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
    assert not (tmp_path / "out" / "model.pt").exists()
    assert _only_run(tmp_path).info.status == "FAILED"
    if signum == signal.SIGTERM:
        assert trainer.returncode == 128 + signal.SIGTERM, output


@pytest.mark.slow
def test_torchrun_started_by_hand_logs_the_processes_that_ran(tmp_path, rng):
    _dataset(tmp_path / "data", rng)
    trainer = _demoire_train(tmp_path, _params_file(tmp_path, 1), sys.executable, "-m", "torch.distributed.run",
                             "--standalone", "--nproc-per-node=2")
    output = trainer.communicate(timeout=300)[0]
    assert trainer.returncode == 0, output
    assert "train.processes = 1, but torchrun started 2 processes: training as 2" in output
    assert _only_run(tmp_path).data.params["train.processes"] == "2"
