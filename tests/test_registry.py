"""Real MLflow on an SQLite store in a temp folder."""

import json
import subprocess

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.errors import ModelNotFoundError
from pipeline.evaluation.gate import GateRule, load_gate_set, score_on_gate
from pipeline.io import write_json, write_png
from pipeline.models import ModelSpec, build_model, load_model, save_model
from pipeline.registry import (CHALLENGER, CHAMPION, champion_history, log_demoire_model, register_and_gate,
                               resolve_alias, rollback_champion, use_tracking_store)

RULE = GateRule(0.05, 0.005)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    use_tracking_store(tmp_path, "test")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def _register(model_dir, psnr, ssim=0.8, gate="g", rule=RULE, rescore=None):
    with mlflow.start_run() as run:
        info = log_demoire_model(model_dir)
    metrics = {"test_psnr": psnr, "test_ssim": ssim, "test_mse": 0.01}
    return register_and_gate(MlflowClient(), "demoire-test", info.model_uri, run.info.run_id, metrics,
                             {"gate_set": gate}, rule, rescore)


def _model(path, seed=0):
    torch.manual_seed(seed)
    spec = ModelSpec("unet", 8, 2)
    save_model(build_model(spec), spec, path)
    return path


def test_champion_moves_only_when_beaten_by_the_margin_and_pyfunc_loads(store, tmp_path):
    model = _model(tmp_path / "model")
    assert (tmp_path / "mlflow.db").is_file()

    v1, d1 = _register(model, 22.0)
    v2, d2 = _register(model, 22.04)  # within the margin
    v3, d3 = _register(model, 23.5, ssim=0.79)  # SSIM drop 0.01 > tolerance
    v4, d4 = _register(model, 23.5, ssim=0.797)
    assert (d1.promote, d2.promote, d3.promote, d4.promote) == (True, False, False, True)

    client = MlflowClient()
    assert str(client.get_model_version_by_alias("demoire-test", CHAMPION).version) == v4
    assert str(client.get_model_version_by_alias("demoire-test", CHALLENGER).version) == v4
    tags = client.get_model_version("demoire-test", v2).tags
    assert tags["promotion"] == "not_promoted" and "does not beat champion v1 by the margin" in tags["promotion_reason"]
    assert tags["gate.champion_version"] == "1" and float(tags["gate.champion_psnr"]) == 22.0
    assert (tags["gate.margin_db"], tags["gate.ssim_tolerance"], tags["gate.gate_set"]) == ("0.05", "0.005", "g")
    assert "SSIM regresses" in client.get_model_version("demoire-test", v3).tags["promotion_reason"]
    assert "| psnr | 23.5 | 22 |" in client.get_model_version("demoire-test", v4).description
    assert champion_history(client, "demoire-test") == [v1, v4]

    pyfunc = mlflow.pyfunc.load_model("models:/demoire-test@champion")
    image = np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    restored = pyfunc.predict(image)
    assert restored.shape == (37, 45, 3) and restored.dtype == np.uint8

    with pytest.raises(ModelNotFoundError, match=r"^no model version at models:/demoire-test@nope; "
                                                 r"aliases of demoire-test: challenger \(v4\), champion \(v4\)$"):
        resolve_alias("demoire-test", "nope")
    with pytest.raises(ModelNotFoundError, match=r"^no registered model 'other' \(models:/other@champion\); "
                                                 r"registered models: demoire-test$"):
        resolve_alias("other", "champion")

    assert rollback_champion(client, "demoire-test") == (v4, v1)
    assert str(client.get_model_version_by_alias("demoire-test", CHAMPION).version) == v1
    assert client.get_model_version("demoire-test", v4).tags["rolled_back"] == "champion moved back to v1"
    with pytest.raises(ModelNotFoundError, match="^demoire-test has no previous champion to roll back to "
                                                 r"\(champion history: v1\)$"):
        rollback_champion(client, "demoire-test")


def _gate_data(root, rng, n=3):
    """A pairs index with a test split under `root` (data/synthesize layout)."""
    data = root / "data" / "synthesize"
    for i in range(n + 1):
        clean = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        write_png(data / "clean" / f"{i}.png", clean)
        write_png(data / "moire" / f"{i}.png", (clean // 2 + 40).astype(np.uint8))
    frame = pd.DataFrame({"pair_id": range(n + 1), "split": ["val"] + ["test"] * n, "source_id": range(n + 1),
                          "moire_path": [f"moire/{i}.png" for i in range(n + 1)],
                          "clean_path": [f"clean/{i}.png" for i in range(n + 1)]})
    pairs = root / "data" / "preprocess" / "pairs.parquet"
    pairs.parent.mkdir(parents=True)
    frame.to_parquet(pairs)
    return data, pairs


def _stage_inputs(root, rng):
    """The evaluate stage's outputs and a dvc.lock, as the register stage finds them."""
    history = root / "history.csv"
    pd.DataFrame({"epoch": [1, 2], "train_loss": [0.1, 0.05], "val_loss": [0.2, 0.1], "val_psnr": [18.0, 19.0]}
                 ).to_csv(history, index=False)
    grid = root / "grid.png"
    write_png(grid, rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    lock = root / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  synthesize:\n    outs:\n    - path: data/synthesize\n"
                    "      hash: md5\n      md5: 0123abc.dir\n  preprocess:\n    outs:\n"
                    "    - path: data/preprocess/pairs.parquet\n      hash: md5\n      md5: 4567def\n")
    return history, grid, lock


def test_register_stage_tracks_provenance_and_rescores_a_champion_on_a_changed_gate_set(tmp_path, monkeypatch, rng,
                                                                                       tiny_params):
    from flows import PROJECT_DIR
    from flows.register import log_and_register_task

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # artifacts of an MLFLOW_TRACKING_URI store land in the working folder
    data, pairs = _gate_data(tmp_path, rng)
    history, grid, lock = _stage_inputs(tmp_path, rng)
    first, second = _model(tmp_path / "first", seed=0), _model(tmp_path / "second", seed=1)
    params = tiny_params.model_copy(update={"registration": tiny_params.registration.model_copy(
        update={"model_name": "demoire-test"})})
    metrics = tmp_path / "metrics.json"
    cpu = torch.device("cpu")

    def register(model_dir, evaluation):
        write_json(metrics, evaluation)
        return log_and_register_task.fn(params, model_dir, history, evaluation, [metrics, history], grid, lock, data, pairs)

    gate = load_gate_set(pairs, data)
    # the first model claims 99 dB: were it not re-scored, nothing could beat it
    record1 = register(first, {"psnr": 99.0, "ssim": 0.99, "mse": 0.0001, "count": 3})
    assert record1["promote"] and record1["gate_set"] == gate.digest

    client = MlflowClient()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True).stdout.strip()
    run = client.get_run(record1["run_id"])
    expected = {"git_commit": commit, "data_version": "0123abc.dir", "pairs_version": "4567def", "gate_set": gate.digest}
    assert expected.items() <= run.data.tags.items()
    version_tags = client.get_model_version("demoire-test", "1").tags
    assert expected.items() <= version_tags.items() and version_tags["test_psnr"] == "99.0"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "images")} | {
        a.path for a in client.list_artifacts(run.info.run_id, "dvc")}
    assert {"images/before_after.png", "dvc/dvc.lock"} <= artifacts
    logged = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="images/before_after.png")
    assert np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(logged)).shape == (40, 60, 3)
    # MLflow logs system metrics only after a full sampling interval (0.5 s here); a warm run can be shorter
    if (run.info.end_time - run.info.start_time) / 1000 >= 1.5:
        assert any(key.startswith("system/") for key in run.data.metrics), sorted(run.data.metrics)

    # a test image changes: the gate set is another one, so the champion is scored again on it
    write_png(data / "clean" / "3.png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    new_gate = load_gate_set(pairs, data)
    assert new_gate.digest != gate.digest
    champion_now = score_on_gate(load_model(first, cpu)[0], new_gate, cpu)
    challenger = {**score_on_gate(load_model(second, cpu)[0], new_gate, cpu), "count": 3}
    challenger["psnr"] = champion_now["psnr"] + 1.0  # beats the re-scored champion, not its recorded 99 dB
    challenger["ssim"] = champion_now["ssim"]
    record2 = register(second, challenger)
    assert record2["promote"], record2["reason"]
    assert record2["champion"]["rescored"] and record2["champion"]["gate_set"] == new_gate.digest
    assert record2["champion"]["psnr"] == pytest.approx(champion_now["psnr"], abs=1e-6)
    tags = client.get_model_version("demoire-test", "2").tags
    assert tags["gate.champion_rescored"] == "True" and tags["gate_set"] == new_gate.digest
    assert json.loads(client.get_registered_model("demoire-test").tags["champion_history"]) == ["1", "2"]
