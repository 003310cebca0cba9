"""Real MLflow on an SQLite store in a temp folder."""

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pipeline.errors import ModelNotFoundError
from pipeline.models import ModelSpec, build_model, save_model
from pipeline.registry import (CHALLENGER, CHAMPION, decide_promotion, log_demoire_model, register_and_gate,
                               resolve_alias, use_tracking_store)


def test_decision_rule():
    assert decide_promotion(20.0, None, None).promote
    assert decide_promotion(25.0, "1", 24.0).promote
    kept = decide_promotion(23.0, "1", 24.0)
    assert not kept.promote and "does not beat champion v1" in kept.reason


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    use_tracking_store(tmp_path, "test")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def _register(model_dir, psnr):
    with mlflow.start_run() as run:
        info = log_demoire_model(model_dir)
    return register_and_gate(MlflowClient(), "demoire-test", info.model_uri, run.info.run_id, {"test_psnr": psnr})


def test_champion_moves_only_when_beaten_and_pyfunc_loads(store, tmp_path):
    spec = ModelSpec("unet", 8, 2)
    save_model(build_model(spec), spec, tmp_path / "model")
    assert (tmp_path / "mlflow.db").is_file()

    v1, d1 = _register(tmp_path / "model", 22.0)
    v2, d2 = _register(tmp_path / "model", 21.0)
    v3, d3 = _register(tmp_path / "model", 23.5)
    assert (d1.promote, d2.promote, d3.promote) == (True, False, True)

    client = MlflowClient()
    assert str(client.get_model_version_by_alias("demoire-test", CHAMPION).version) == v3
    assert str(client.get_model_version_by_alias("demoire-test", CHALLENGER).version) == v3
    assert client.get_model_version("demoire-test", v2).tags["promotion"] == "not_promoted"
    assert "does not beat champion v1" in client.get_model_version("demoire-test", v2).tags["promotion_reason"]

    pyfunc = mlflow.pyfunc.load_model("models:/demoire-test@champion")
    image = np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    restored = pyfunc.predict(image)
    assert restored.shape == (37, 45, 3) and restored.dtype == np.uint8

    with pytest.raises(ModelNotFoundError, match="no model version at models:/demoire-test@nope; registered models: demoire-test"):
        resolve_alias("demoire-test", "nope")
