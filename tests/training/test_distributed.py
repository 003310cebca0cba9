"""DDP through torchrun with 2 CPU processes (gloo), against one process with the same global batch."""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline.config import load_params
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
    run_training(load_params(params_path), params_path, tmp_path / "data", tmp_path / "data" / "pairs.parquet",
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

    from mlflow.tracking import MlflowClient

    from pipeline.training.telemetry import recorded_run_id

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = recorded_run_id(ddp)  # rank 0 alone streamed: one run, each epoch once
    assert [m.step for m in client.get_metric_history(run, "val_psnr")] == [1, 2]
    assert len(client.search_runs([client.get_run(run).info.experiment_id])) == 2  # the ddp and single trainings
