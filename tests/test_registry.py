"""Real MLflow on an SQLite store in a temp folder."""

import base64
import json
import logging
import os
import subprocess
import sys
import threading
import time

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.config import InferParams
from pipeline.errors import InputDataError, ModelNotFoundError, ServiceUnavailableError
from pipeline.evaluation.gate import GateRule, load_gate_set, score_on_gate, scored_as
from pipeline.inference import restore_image
from pipeline.io import write_json, write_png
from pipeline.models import ModelSpec, build_model, load_model, save_model
from pipeline.registry import (CHALLENGER, CHAMPION, champion_history, load_registered_model, log_demoire_model,
                               move_champion, register_and_gate, resolve_alias, rollback_champion,
                               use_tracking_store)
from pipeline.registry.pyfunc import resolve_model_uri
from tests.conftest import _free_port

RULE = GateRule(0.05, 0.005)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    use_tracking_store(tmp_path, "test")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def _register(model_dir, psnr, ssim=0.8, gate="g", rule=RULE, rescore=None, infer=None):
    with mlflow.start_run() as run:
        info = log_demoire_model(model_dir, infer)
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
    assert resolve_model_uri("models:/demoire-test/latest") == ("demoire-test", v4, None)
    assert resolve_model_uri("models:/demoire-test@champion") == ("demoire-test", v4, "champion")
    with pytest.raises(ModelNotFoundError, match=r"^no model version models:/demoire-test/99; versions of "
                                                 r"demoire-test: 1, 2, 3, 4 \(or an alias: models:/demoire-test@champion\)$"):
        resolve_model_uri("models:/demoire-test/99")
    with pytest.raises(ModelNotFoundError, match=r"^no registered model 'other' \(models:/other/1\); "):
        resolve_model_uri("models:/other/1")
    with pytest.raises(ModelNotFoundError, match=r"^models:/demoire-test names no version: use models:/NAME/VERSION"):
        resolve_model_uri("models:/demoire-test")

    assert rollback_champion(client, "demoire-test") == (v4, v1)
    assert str(client.get_model_version_by_alias("demoire-test", CHAMPION).version) == v1
    assert client.get_model_version("demoire-test", v4).tags["rolled_back"] == "champion moved back to v1"
    with pytest.raises(ModelNotFoundError, match="^demoire-test has no previous champion to roll back to "
                                                 r"\(champion history: v1\)$"):
        rollback_champion(client, "demoire-test")
    move_champion(client, "demoire-test", v4)  # champion again: no longer marked rolled back
    assert "rolled_back" not in client.get_model_version("demoire-test", v4).tags


def test_a_champion_split_with_other_fractions_is_said_to_have_trained_on_sources_of_the_test_split(store, tmp_path):
    from pipeline.data.splits import source_draw
    from pipeline.registry import champion_trained_on

    client = MlflowClient()
    assert champion_trained_on(client, "demoire-test", ["procedural/00001-code"]) is None  # no champion yet
    with mlflow.start_run() as run:
        mlflow.log_params({"preprocess.test_fraction": "0.1", "preprocess.val_fraction": "0.1"})
        info = log_demoire_model(_model(tmp_path / "m"), None)
    _, decision = register_and_gate(client, "demoire-test", info.model_uri, run.info.run_id,
                                    {"test_psnr": 30.0, "test_ssim": 0.8, "test_mse": 0.01}, {"gate_set": "g"}, RULE)
    assert decision.promote
    sources = [f"procedural/{i:05d}-code" for i in range(300)]
    # the champion's own fractions, or a test split reaching into its val share only: none was in its train split
    assert champion_trained_on(client, "demoire-test", [s for s in sources if source_draw(s) < 0.1]) is None
    assert champion_trained_on(client, "demoire-test", [s for s in sources if source_draw(s) < 0.2]) is None
    # test_fraction raised to 0.3: the test split now holds sources the champion trained on (an imported pair's
    # id is not a synthetic source's, and is not counted)
    test_now = [s for s in sources if source_draw(s) < 0.3] + ["dataset0-fhdmi/test/0001"]
    trained = sorted(s for s in test_now if s.startswith("procedural/") and source_draw(s) >= 0.2)  # its train share
    assert len(trained) > 10
    assert champion_trained_on(client, "demoire-test", test_now) == (
        f"champion v1 was trained with preprocess.test_fraction 0.1 and val_fraction 0.1: {len(trained)} of this test "
        f"split's {len(test_now) - 1} source images (first: {trained[0]}) were in its train split, so its figures "
        "re-scored on them may run high; keep its fractions, or gate on real sets (evaluate.real_sets)")


def test_moving_champion_to_the_champion_leaves_its_history_as_it_was(store, tmp_path):
    client = MlflowClient()
    v1, _ = _register(_model(tmp_path / "model"), 22.0)
    stored = client.get_registered_model("demoire-test").tags["champion_history"]
    for _ in range(2):
        move_champion(client, "demoire-test", v1)
    assert champion_history(client, "demoire-test") == [v1]
    assert client.get_registered_model("demoire-test").tags["champion_history"] == stored == json.dumps([v1])


def test_a_later_promote_decides_an_undecided_version_and_finishes_a_half_applied_ones_record(store, tmp_path):
    from dataclasses import replace

    from pipeline.evaluation.gate import SYNTHETIC, GateScores, decide_promotion
    from pipeline.registry import apply_promote, compare_challenger, promote_history
    from pipeline.registry.promotion import version_decision
    from pipeline.registry.transaction import RegistryLock, settle_version

    client, name = MlflowClient(), "demoire-test"
    v1, _ = _register(_model(tmp_path / "model"), 22.0)
    first = client.get_model_version(name, v1)

    def by_hand(psnr: float) -> str:  # a version with scores on gate set g and no registration decision
        tags = {"test_psnr": str(psnr), "test_ssim": "0.8", "test_mse": "0.01", "gate_set": "g"}
        version = str(client.create_model_version(name, first.source, first.run_id, tags=tags).version)
        client.set_registered_model_alias(name, CHALLENGER, version)
        return version

    def no_rescoring():
        raise AssertionError("both were scored on gate set g")

    def registration_died_after_recording(psnr: float, champion_version: str, champion_psnr: float):
        """A version whose registration recorded "promote" and died before applying it; its recorded decision."""
        version = by_hand(psnr)
        scores = GateScores.from_means(version, {"psnr": psnr, "ssim": 0.8, "mse": 0.01}, "g", SYNTHETIC)
        champion = GateScores.from_means(champion_version, {"psnr": champion_psnr, "ssim": 0.8, "mse": 0.01}, "g",
                                         SYNTHETIC)
        recorded = decide_promotion(scores, champion, RULE)
        assert recorded.promote
        client.set_model_version_tag(name, version, "promotion.decision", json.dumps(recorded.record()))
        return version, recorded

    v2 = by_hand(23.0)
    apply_promote(client, name, compare_challenger(client, name, RULE, no_rescoring), "demoire promote")
    tags = client.get_model_version(name, v2).tags  # the first decision on it: a later registration leaves it be
    assert tags["promotion"] == "promoted" and version_decision(client, name, v2).promote
    assert [entry["promote"] for entry in promote_history(client, name, v2)] == [True]
    assert resolve_alias(name, CHAMPION) == v2

    v3, recorded = registration_died_after_recording(24.0, v2, 23.0)
    strict = GateRule(5.0, 0.005)  # a later promote under a stricter rule keeps v2
    apply_promote(client, name, compare_challenger(client, name, strict, no_rescoring), "demoire promote")
    found = client.get_model_version(name, v3)  # the registration's record finished, saying it never moved champion
    unmoved = replace(recorded, promote=False, reason=f"its registration died before moving champion to v{v3}, and "
                      f"`demoire promote` decided instead; the registration's gate said: {recorded.reason}")
    assert found.tags["promotion"] == "not_promoted" and version_decision(client, name, v3) == unmoved
    assert found.tags["promotion_reason"] == unmoved.reason
    assert found.description.startswith("its registration, finished by demoire promote: not promoted: its registration")
    assert found.tags["gate.margin_db"] == str(RULE.margin_db) and resolve_alias(name, CHAMPION) == v2  # promote's say
    assert [entry["margin_db"] for entry in promote_history(client, name, v3)] == [5.0]
    with RegistryLock(client, name) as lock:  # the registration's rerun finds it decided, as not promoted: it was not
        assert settle_version(client, name, v3, RULE, None, SYNTHETIC, "run x", lock) == unmoved
    assert resolve_alias(name, CHAMPION) == v2 and [e["promote"] for e in promote_history(client, name, v3)] == [False]

    v4, recorded = registration_died_after_recording(25.0, v2, 23.0)  # this time the promote moves champion there
    apply_promote(client, name, compare_challenger(client, name, RULE, no_rescoring), "demoire promote")
    found = client.get_model_version(name, v4)  # its registration's record: it never moved champion; the promote did
    unmoved = replace(recorded, promote=False, reason=f"its registration died before moving champion to v{v4}, and "
                      f"`demoire promote` decided instead; the registration's gate said: {recorded.reason}")
    assert resolve_alias(name, CHAMPION) == v4 and found.tags["promotion"] == "not_promoted"
    assert version_decision(client, name, v4) == unmoved and found.tags["promotion_reason"] == unmoved.reason
    assert [entry["promote"] for entry in promote_history(client, name, v4)] == [True]
    assert "promote.pending" not in client.get_registered_model(name).tags


# Small tiles, so a 70x90 image is really restored in overlapping tiles by the served model.
TINY_TILING = InferParams(tile_size=32, tile_overlap=8)


@pytest.fixture
def champion(store):
    """A tiny unet registered as champion of `demoire-test`, logged with TINY_TILING; returns its torch module."""
    spec = ModelSpec("unet", 8, 2)
    model = build_model(spec, seed=1)
    save_model(model, spec, store / "model")
    _register(store / "model", 22.0, infer=TINY_TILING)
    return model.eval()


def _expected(model, image):
    """What the champion must return: the library's tiled restoration with the logged settings (falloff included)."""
    return restore_image(model, image, "cpu", tile_size=32, overlap=8, falloff=TINY_TILING.falloff)


def test_pyfunc_tiles_with_the_logged_settings(champion):
    pyfunc = mlflow.pyfunc.load_model("models:/demoire-test@champion")
    # max_pixels: the params' limit, capped at what the served model accepts (a 4K frame)
    assert pyfunc.model_config == {"tile_size": 32, "tile_overlap": 8, "tile_batch": 1, "device": "auto",
                                   "max_pixels": 8_388_608, "max_side": 2048, "falloff": 0.5}
    image = np.random.default_rng(3).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    np.testing.assert_array_equal(pyfunc.predict(image), _expected(champion, image))


def test_pyfunc_restores_larger_photos_at_the_logged_max_side_and_undoes_the_logged_falloff_share(store):
    spec = ModelSpec("unet", 8, 2)
    model = build_model(spec, seed=1)
    save_model(model, spec, store / "model")
    _register(store / "model", 22.0, infer=InferParams(tile_size=32, tile_overlap=8, max_side=64, falloff=0.25))
    pyfunc = mlflow.pyfunc.load_model("models:/demoire-test@champion")
    assert (pyfunc.model_config["max_side"], pyfunc.model_config["falloff"]) == (64, 0.25)
    y, x = np.mgrid[:70, :90]
    page = np.where((y // 7) % 3 == 0, 40.0, 220.0) * (1 - 0.3 * ((x - 45) ** 2 + (y - 35) ** 2) / (45**2 + 35**2))
    image = np.repeat(page.astype(np.uint8)[..., None], 3, axis=2)  # a page darker towards its corners
    served = pyfunc.predict(image)
    np.testing.assert_array_equal(served, restore_image(model.eval(), image, "cpu", 32, 8, max_side=64, falloff=0.25))
    assert not np.array_equal(served, restore_image(model.eval(), image, "cpu", 32, 8, max_side=64))
    assert not np.array_equal(served, _expected(model, image))


def _png_bytes(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_pyfunc_takes_an_encoded_photo_as_bytes_or_base64_and_refuses_other_text(champion):
    import base64

    from mlflow.exceptions import MlflowException

    pyfunc = mlflow.pyfunc.load_model("models:/demoire-test@champion")
    image = np.random.default_rng(6).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    encoded = _png_bytes(image)
    text = base64.b64encode(encoded).decode()
    for request in (encoded, text, [text], f"data:image/png;base64,{text}"):
        np.testing.assert_array_equal(pyfunc.predict(request), _expected(champion, image))
    with pytest.raises(MlflowException, match="expected base64 of an image file"):
        pyfunc.predict("not base64 !")
    with pytest.raises(MlflowException, match="cannot read image from the request"):
        pyfunc.predict(base64.b64encode(b"plain text, no image").decode())


FRESH_PROCESS = """
import sys, mlflow, numpy as np
model = mlflow.pyfunc.load_model("models:/demoire-test@champion")
np.save(sys.argv[1], model.predict(np.load(sys.argv[2])))
import pipeline
print(pipeline.__file__)
"""


def test_the_cli_loads_the_champion_as_a_torch_module_by_alias(champion):
    loaded = load_registered_model("models:/demoire-test@champion", "cpu")  # what predict/evaluate --model use
    x = torch.rand(1, 3, 32, 40)
    with torch.no_grad():
        assert torch.equal(loaded(x), champion(x))


def test_a_served_alias_is_pinned_to_one_version_loaded_and_described(champion, store):
    """GET /model names the version serve loaded, even when the alias moves between loading and describing."""
    from pipeline.model_source import describe_model, load_model_and_spec, pin_model

    pinned, registered = pin_model("models:/demoire-test@champion")
    assert pinned == "models:/demoire-test/1"
    assert (registered["version"], registered["alias"], registered["metrics"]["test_psnr"]) == ("1", "champion", 22.0)
    _register(store / "model", 30.0)  # v2 beats v1: the alias moves
    net, _, spec = load_model_and_spec(pinned, "cpu")
    info = describe_model("models:/demoire-test@champion", net, spec, registered)
    assert (info["source"], info["version"], info["alias"]) == ("models:/demoire-test@champion", "1", "champion")
    assert pin_model("models:/demoire-test@champion")[0] == "models:/demoire-test/2"
    assert pin_model(str(store / "model")) == (str(store / "model"), {})


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
        # A photo file as it is, base64 in JSON: no need to turn it into lists of numbers first.
        photo = base64.b64encode(_png_bytes(image)).decode()
        response = httpx.post(f"{url}/invocations", json={"inputs": photo}, timeout=120)
        assert response.status_code == 200, response.text[:2000]
        np.testing.assert_array_equal(np.asarray(response.json()["predictions"]), _expected(champion, image))
        refused = httpx.post(f"{url}/invocations", json={"inputs": "not base64 !"}, timeout=60)
        assert refused.status_code == 400 and "expected base64 of an image file" in refused.text
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


class _LogLines(logging.Handler):
    """The messages one logger emits while in a `with`, whatever handlers and propagation the logging config set."""

    def __init__(self, name: str):
        super().__init__(logging.INFO)
        self.logger, self.lines = logging.getLogger(name), []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __enter__(self) -> "_LogLines":
        self.kept_level = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc_info) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.kept_level)


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
        return log_and_register_task.fn(params, model_dir, evaluation, [metrics, history], grid, lock, data, pairs)

    gate = load_gate_set(pairs, data)
    key = scored_as(gate.digest, params.infer)  # the test split, restored with params' tiles and falloff
    # the first model claims 99 dB: were it not re-scored, nothing could beat it
    record1 = register(first, {"psnr": 99.0, "ssim": 0.99, "mse": 0.0001, "count": 3})
    assert record1["promote"] and record1["gate_set"] == key

    client = MlflowClient()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True).stdout.strip()
    run = client.get_run(record1["run_id"])
    expected = {"git_commit": commit, "data_version": "0123abc.dir", "pairs_version": "4567def", "gate_set": key}
    assert expected.items() <= run.data.tags.items()
    assert run.data.tags["git_dirty"] in ("true", "false")  # this checkout, as it is (pipeline.provenance's tests)
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
    said = _LogLines("pipeline.registry.promotion")  # Prefect's logging config keeps pipeline.* from caplog
    with said:
        record2 = register(second, challenger)
    new_key = scored_as(new_gate.digest, params.infer)
    assert record2["promote"], record2["reason"]
    # why it was re-scored, and its figures readably
    assert (f"demoire-test v1 was scored on gate set {key[:12]}: re-scored on this one, {new_key[:12]} (test split): "
            f"psnr {champion_now['psnr']:.4g}, ssim {champion_now['ssim']:.4g}, mse ") in said.text, said.text
    assert record2["champion"]["rescored"] and record2["champion"]["gate_set"] == new_key
    assert record2["champion"]["psnr"] == pytest.approx(champion_now["psnr"], abs=1e-6)
    tags = client.get_model_version("demoire-test", "2").tags
    assert tags["gate.champion_rescored"] == "True" and tags["gate_set"] == new_key
    assert json.loads(client.get_registered_model("demoire-test").tags["champion_history"]) == ["1", "2"]

    # the same weights restored otherwise (other tiles: other scores): the champion is scored again that way,
    # so a model never beats itself on a setting (v2's recorded scores were restored with the first tiles)
    params = params.model_copy(update={"infer": params.infer.model_copy(update={"tile_size": 32, "tile_overlap": 4})})
    same_weights = {**score_on_gate(load_model(second, cpu)[0], new_gate, cpu, params.infer), "count": 3}
    record3 = register(second, same_weights)
    assert not record3["promote"] and record3["champion"]["rescored"], record3["reason"]
    assert record3["champion"]["psnr"] == pytest.approx(same_weights["psnr"], abs=1e-6)


def test_register_stage_links_the_version_to_the_live_training_run(tmp_path, monkeypatch, rng, tiny_params):
    from flows.register import log_and_register_task
    from pipeline.training.loop import EpochStats
    from pipeline.training.telemetry import RUN_FILE, live_training_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    data, pairs = _gate_data(tmp_path, rng)
    history, grid, lock = _stage_inputs(tmp_path, rng)
    trained, elsewhere = _model(tmp_path / "trained", seed=0), _model(tmp_path / "elsewhere", seed=1)
    params = tiny_params.model_copy(update={"registration": tiny_params.registration.model_copy(
        update={"model_name": "demoire-test"})})
    with live_training_run(params, trained) as telemetry:  # what the train stage streamed
        telemetry.system_metrics = False
        telemetry.on_start([])
        telemetry.on_epoch([EpochStats(1, 0.1, 0.09, 21.5, 2.0, 1e-3)])
    training_run = telemetry.run_id
    (elsewhere / RUN_FILE).write_text(json.dumps({"run_id": "f" * 32}))  # trained against another store
    metrics = tmp_path / "metrics.json"

    def register(model_dir, psnr):
        evaluation = {"psnr": psnr, "ssim": 0.5, "mse": 0.01, "count": 3}
        write_json(metrics, evaluation)
        return log_and_register_task.fn(params, model_dir, evaluation, [metrics, history], grid, lock, data, pairs)

    record = register(trained, 20.0)
    client = MlflowClient()
    run = client.get_run(record["run_id"])
    assert run.data.tags["training_run_id"] == training_run and run.data.tags["mlflow.parentRunId"] == training_run
    assert not {"train_loss", "val_loss", "val_psnr"} & set(run.data.metrics)  # history.csv is not replayed
    assert client.get_model_version("demoire-test", record["version"]).tags["training_run_id"] == training_run
    assert client.get_run(training_run).data.tags["registered_version"] == f"demoire-test/{record['version']}"
    assert [m.value for m in client.get_metric_history(training_run, "val_psnr")] == [21.5]

    assert "registered_earlier" not in record and run.info.run_name == "register-workspace"
    again = register(trained, 20.0)  # a retry or rerun with the same inputs: the same version and run
    assert (again["version"], again["run_id"]) == (record["version"], record["run_id"])
    assert again["registered_earlier"] == {"run_id": record["run_id"], "dvc_experiment": None}  # not a new decision
    unlinked = register(elsewhere, 20.5)
    assert "training_run_id" not in client.get_model_version("demoire-test", unlinked["version"]).tags


def test_register_stage_gates_on_real_sets_and_logs_every_set(tmp_path, monkeypatch, rng, tiny_raw):
    from flows.register import log_and_register_task
    from pipeline.config import parse_params
    from pipeline.errors import InputDataError
    from pipeline.evaluation.real_sets import find_real_sets, real_gate_hash, real_sets_scorer
    from tests.evaluation.test_real_sets import real_looking_pairs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    data, pairs = _gate_data(tmp_path, rng)
    history, grid, lock = _stage_inputs(tmp_path, rng)
    first, second = _model(tmp_path / "first", seed=0), _model(tmp_path / "second", seed=1)
    real_looking_pairs(tmp_path / "real", rng, ["a_1.png", "a_2.png", "b_1.png"])
    (tmp_path / "per_set").mkdir()  # the evaluate stage's per-image CSVs of the real sets
    pd.DataFrame({"image": ["a_1.png"], "psnr": [21.0]}).to_csv(tmp_path / "per_set" / "a.csv", index=False)
    tiny_raw |= {"register": {**tiny_raw["register"], "model_name": "demoire-test"},
                 "infer": {"tile_size": 32, "tile_overlap": 8}}
    tiny_raw["evaluate"]["device"] = "cpu"
    synthetic = parse_params(tiny_raw)
    tiny_raw["evaluate"]["real_sets"] = [{"name": name, "path": str(tmp_path / "real"), "include": f"{name}_*"}
                                         for name in ("a", "b")]
    real = parse_params(tiny_raw)
    metrics = tmp_path / "metrics.json"

    def register(params, model_dir, evaluation):
        write_json(metrics, evaluation)
        return log_and_register_task.fn(params, model_dir, evaluation, [metrics, history], grid, lock, data,
                                        pairs, tmp_path / "per_set")

    record1 = register(synthetic, first, {"psnr": 20.0, "ssim": 0.5, "mse": 0.01, "count": 3})
    assert record1["promote"] and record1["gate_kind"] == "synthetic"

    # Real sets configured: the champion was scored on the test split only, so it is re-scored on the real sets.
    sets = find_real_sets(real.evaluate.real_sets, tmp_path)
    champion_now = real_sets_scorer(sets, torch.device("cpu"), real.infer)(first)
    means = {**champion_now, "psnr": champion_now["psnr"] + 0.5, "tone_psnr": champion_now["tone_psnr"] + 0.5}
    per_set = {"count": 2, "skipped": 0, "psnr": 21.0, "tone_psnr": 24.5, "ssim": 0.7, "moire_removed_low": None,
               "hash": sets[0].digest}
    evaluation = {"psnr": 19.0, "ssim": 0.4, "mse": 0.02, "count": 3,
                  "real": {"a": per_set, "b": {**per_set, "count": 1, "hash": sets[1].digest}},
                  "real_mean": means, "real_gate_set": scored_as(real_gate_hash(sets), real.infer)}
    record2 = register(real, second, evaluation)
    assert record2["promote"] and record2["gate_kind"] == "real", record2["reason"]
    assert record2["champion"]["rescored"] and record2["champion"]["kind"] == "real"
    assert record2["champion"]["tone_psnr"] == pytest.approx(champion_now["tone_psnr"], abs=1e-9)
    assert "real PSNR" in record2["reason"] and "real tone-aligned PSNR" in record2["reason"]

    client = MlflowClient()
    logged = client.get_run(record2["run_id"]).data.metrics
    assert (logged["test_psnr"], logged["real_a_psnr"], logged["real_b_count"]) == (19.0, 21.0, 1.0)
    assert logged["real_tone_psnr"] == pytest.approx(means["tone_psnr"]) and "real_a_moire_removed_low" not in logged
    assert "evaluation/real/a.csv" in {a.path for a in client.list_artifacts(record2["run_id"], "evaluation/real")}
    tags = client.get_model_version("demoire-test", "2").tags
    real_key = scored_as(real_gate_hash(sets), real.infer)
    assert (tags["gate.kind"], tags["real_gate_set"], tags["gate.gate_set"]) == ("real", real_key, real_key)
    # the test split's, for a later synthetic gate
    assert tags["gate_set"] == scored_as(load_gate_set(pairs, data).digest, real.infer)
    assert tags["real_a_tone_psnr"] == "24.5" and tags["gate.champion_rescored"] == "True"
    assert float(tags["gate.champion_tone_psnr"]) == pytest.approx(champion_now["tone_psnr"])
    description = client.get_model_version("demoire-test", "2").description
    assert "(real sets; gate.kind real)" in description and "| tone_psnr |" in description

    # The real folders changed after the evaluate stage scored them: nothing is registered on stale scores, and
    # the refusal names the set whose files changed.
    with pytest.raises(InputDataError, match=r"^the real sets of evaluate.real_sets hash to [0-9a-f]{12} but were "
                                             r"scored as 000000000000 \(changed: b\); run `dvc repro -f "
                                             r"evaluate` to score them again$"):
        stale = {**evaluation["real"], "b": {**evaluation["real"]["b"], "hash": "1" * 64}}
        register(real, second, {**evaluation, "real": stale, "real_gate_set": "0" * 64})
    assert len(client.search_model_versions("name='demoire-test'")) == 2


def test_the_bounded_server_answers_a_refusal_briefly_and_a_shutdown_with_503(champion, store):
    from pipeline.serving.bounded import build_app
    from tests.serving.conftest import running_app

    files_before = {path: path.stat().st_mtime_ns for path in store.rglob("*") if path.is_file()}
    app = build_app("models:/demoire-test@champion", 64 * 2**20, timeout_s=120)
    # serving reads the registry: before, MLflow's load wrote registered_model_meta into the artifact store
    assert {path: path.stat().st_mtime_ns for path in store.rglob("*") if path.is_file()
            and path.name != "mlflow.db"} == {path: t for path, t in files_before.items() if path.name != "mlflow.db"}
    with running_app(app) as url:
        refused = httpx.post(f"{url}/invocations", json={"inputs": "not base64 !" * 10_000}, timeout=60)
        assert refused.status_code == 400, refused.text[:300]
        # MLflow's own answer repeats the 120 kB request before the model's message
        assert len(refused.content) < 1_000 and "expected base64 of an image file" in refused.json()["message"]
        assert refused.json()["error_code"] == refused.json()["error_class"] == "INVALID_PARAMETER_VALUE"
        # a body that is not JSON, as text or as bytes that are not UTF-8: MLflow's message holds it whole
        for body, why in ((b"P9kXWRbU" * 20_000, " (Expecting value: line 1 column 1 (char 0))"),
                          (b"\x89PNG\r\n" + bytes(range(256)) * 500, ": not UTF-8 text")):
            not_json = httpx.post(f"{url}/invocations", content=body, headers={"Content-Type": "application/json"},
                                  timeout=60)
            assert not_json.status_code == 400 and len(not_json.content) < 1_000, not_json.text[:300]
            assert not_json.json()["message"] == (f"the request body is not JSON{why} (send {{\"inputs\": …}}: an "
                                                  "array of 0–255 values or base64 of an image file)")

        large = base64.b64encode(_png_bytes(np.zeros((1500, 1500, 3), np.uint8))).decode()  # 2,300 tiles of 32
        answer = {}
        request = threading.Thread(target=lambda: answer.update(
            response=httpx.post(f"{url}/invocations", json={"inputs": large}, timeout=120)))
        request.start()
        deadline = time.monotonic() + 60
        while not any(stop.started.is_set() for stop in app.in_flight) and time.monotonic() < deadline:
            time.sleep(0.02)
        app.stop_all("the server is shutting down")  # what SIGTERM does (serve's handle_exit)
        request.join(60)
        response = answer["response"]
        assert response.status_code == 503, response.text[:300]  # was 429 Too Many Requests
        assert response.json()["message"] == "stopped: the server is shutting down"


@pytest.mark.slow
def test_the_server_probe_names_a_wrong_url_host_or_scheme_in_one_line(tmp_path):
    from pipeline.registry.store import check_server_answers
    from tests.conftest import _free_port, mlflow_server, stop_server

    port = _free_port()
    server = mlflow_server(tmp_path, port, "--allowed-hosts", f"127.0.0.1:{port}")
    try:
        check_server_answers(f"http://127.0.0.1:{port}")  # the server's root: its API answers
        wrong_path = (rf"^MLFLOW_TRACKING_URI=http://127.0.0.1:{port}/mlflow: no MLflow API at this URL "
                      r"\(HTTP 404 for /api/2.0/mlflow/experiments/get-by-name\)")
        with pytest.raises(InputDataError, match=wrong_path):
            check_server_answers(f"http://127.0.0.1:{port}/mlflow")
        refused_host = (rf"^MLFLOW_TRACKING_URI=http://localhost:{port}: the server refuses the host name "
                        rf"'localhost:{port}'; start it with --allowed-hosts")
        with pytest.raises(InputDataError, match=refused_host):
            check_server_answers(f"http://localhost:{port}")
    finally:
        stop_server(server)
    with pytest.raises(ServiceUnavailableError,
                       match=rf"^MLFLOW_TRACKING_URI=http://alice:\*\*\*@127.0.0.1:{port}: no MLflow server answers"):
        check_server_answers(f"http://alice:s3cret@127.0.0.1:{port}")  # the password never shown
    with pytest.raises(InputDataError, match=r"^MLFLOW_TRACKING_URI=127.0.0.1:5000: a server's address without its "
                                             r"scheme; write http://127.0.0.1:5000 \(or https://\)$"):
        check_server_answers("127.0.0.1:5000")
    for store in ("databricks", "/srv/mlruns", "file:/x"):  # names and folders MLflow resolves itself
        check_server_answers(store)


def test_the_project_store_is_refused_in_a_folder_whose_path_holds_a_question_mark(tmp_path, monkeypatch):
    from pipeline.registry.store import default_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    odd = tmp_path / "h #5 (100%) ü"  # these are fine: SQLAlchemy reads the path as written
    assert default_tracking_uri(odd) == f"sqlite:///{odd / 'mlflow.db'}"
    # before: the store went to the file "<tmp>/q " beside the folder, its lock to another path
    with pytest.raises(InputDataError, match=r"q \?x: an SQLite store's URL cannot name a folder whose path holds '\?'"):
        default_tracking_uri(tmp_path / "q ?x")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    assert default_tracking_uri(tmp_path / "q ?x") == "sqlite:////elsewhere/mlflow.db"


def test_the_logged_models_requirements_cover_what_its_code_imports_on_loading():
    # an environment built from them (not --env-manager local) must import the model's code: every package the
    # load path imports is a listed one, mlflow or something either installs
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    from pipeline.registry.pyfunc import PYFUNC_REQUIREMENTS

    listed = {_dist(Requirement(r).name) for r in PYFUNC_REQUIREMENTS}
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert listed == {_dist(Requirement(r).name) for r in pyproject["project"]["dependencies"]} - {"mlflow"}
    probe = ("import sys, importlib.metadata as md, mlflow, mlflow.pyfunc\n"
             "before = set(sys.modules)\n"
             "from pipeline.registry.pyfunc import DemoirePyfunc\n"
             "import pipeline.photos, pipeline.inference, pipeline.models, pipeline.training.device\n"
             "import pipeline.serving.bounded\n"
             "names = {m.split('.')[0] for m in set(sys.modules) - before}\n"
             "dists = md.packages_distributions()\n"
             "print('\\n'.join(sorted({d for m in names for d in dists.get(m, [])})))\n")
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert "opencv-python-headless" in {_dist(name) for name in imported}  # what the list once lacked
    optional = {"demoire", "pydot"}  # pydot: torch.fx imports it where it is installed, and goes on without it
    assert {_dist(name) for name in imported} - optional - _installed_with(listed | {"mlflow"}) == set()


def _dist(name: str) -> str:
    """A distribution's name as pip compares them."""
    return name.lower().replace("_", "-")


def _installed_with(roots: set[str]) -> set[str]:
    """`roots` and every distribution they require, transitively (extras left out)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    found, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [_dist(Requirement(r).name) for r in requires if "extra ==" not in r]
    return found
