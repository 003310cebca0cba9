"""Real MLflow on an SQLite store in a temp folder."""

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import InferParams
from pipeline.errors import ModelNotFoundError
from pipeline.inference import restore_image
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


def _register(model_dir, psnr, infer=None):
    with mlflow.start_run() as run:
        info = log_demoire_model(model_dir, infer)
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


# Small tiles, so a 70x90 image is really restored in overlapping tiles by the served model.
TINY_TILING = InferParams(tile_size=32, tile_overlap=8)


@pytest.fixture
def champion(store):
    """A tiny unet registered as champion of `demoire-test`, logged with TINY_TILING; returns its torch module."""
    spec = ModelSpec("unet", 8, 2)
    model = build_model(spec, seed=1)
    save_model(model, spec, store / "model")
    _register(store / "model", 22.0, TINY_TILING)
    return model.eval()


def _expected(model, image):
    """What the champion must return: the library's tiled restoration with the logged tile settings."""
    return restore_image(model, image, "cpu", tile_size=32, overlap=8)


def test_pyfunc_tiles_with_the_logged_settings(champion):
    pyfunc = mlflow.pyfunc.load_model("models:/demoire-test@champion")
    assert pyfunc.model_config == {"tile_size": 32, "tile_overlap": 8, "tile_batch": 1, "device": "auto"}
    image = np.random.default_rng(3).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    np.testing.assert_array_equal(pyfunc.predict(image), _expected(champion, image))


FRESH_PROCESS = """
import sys, mlflow, numpy as np
model = mlflow.pyfunc.load_model("models:/demoire-test@champion")
np.save(sys.argv[1], model.predict(np.load(sys.argv[2])))
import pipeline
print(pipeline.__file__)
"""


def test_champion_loads_in_a_fresh_python_process(champion, tmp_path):
    image = np.random.default_rng(4).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    np.save(tmp_path / "in.npy", image)
    # No pickle allowed, and run from an empty folder: `pipeline` must come from the code logged with the model.
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    (tmp_path / "elsewhere").mkdir()
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(tmp_path / "out.npy"), str(tmp_path / "in.npy")],
                          cwd=tmp_path / "elsewhere", env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    restored = np.load(tmp_path / "out.npy")
    assert restored.dtype == np.uint8 and restored.shape == image.shape
    np.testing.assert_array_equal(restored, _expected(champion, image))
    assert f"{os.sep}code{os.sep}pipeline{os.sep}" in done.stdout.strip().splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_the_restored_image(champion, tmp_path):
    port = _free_port()
    # The server execs `uvicorn` by name: the environment's bin folder must be on PATH, as when activated.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PATH": path}
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/demoire-test@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"server not up within 240 s: {(tmp_path / 'serve.log').read_text()[-3000:]}")
        image = np.random.default_rng(5).integers(0, 256, (70, 90, 3), dtype=np.uint8)
        # A tensor-signature model takes the TF-serving style {"inputs": nested lists}.
        response = httpx.post(f"{url}/invocations", content=json.dumps({"inputs": image.tolist()}),
                              headers={"Content-Type": "application/json"}, timeout=120)
        assert response.status_code == 200, response.text[:2000]
        restored = np.asarray(response.json()["predictions"])
        assert restored.shape == image.shape
        np.testing.assert_array_equal(restored, _expected(champion, image))
    finally:
        _stop_group(server)
        log.close()


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group the server leads (mlflow, bash, uvicorn and its workers), then SIGKILL."""
    for signal, wait in ((15, 30), (9, 30)):
        try:
            os.killpg(process.pid, signal)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
