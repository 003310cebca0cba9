"""`pip install '.[serve,export]'` (not editable) in a fresh venv, then `demoire` run outside the checkout.

The checkout's files are copied first, since building a wheel writes build/ and *.egg-info beside them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from pipeline.models import ModelSpec, build_model, save_model
from pipeline.io import write_png

ROOT = Path(__file__).resolve().parents[1]


def _tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.splitlines()
    return [name for name in listed if (ROOT / name).is_file()]


def _register(model_dir: Path, store: Path) -> None:
    """Register `model_dir` as champion of `demoire` in an SQLite store, as the register stage does."""
    script = f"""
import mlflow
from mlflow.tracking import MlflowClient
from pathlib import Path
from pipeline.evaluation.gate import GateRule
from pipeline.registry import log_demoire_model, register_and_gate, use_tracking_store
use_tracking_store(Path({str(store)!r}), "install-test")
with mlflow.start_run() as run:
    info = log_demoire_model(Path({str(model_dir)!r}))
register_and_gate(MlflowClient(), "demoire", info.model_uri, run.info.run_id,
                  {{"test_psnr": 22.0, "test_ssim": 0.8, "test_mse": 0.01}}, {{"gate_set": "g"}}, GateRule(0.05, 0.005))
"""
    subprocess.run([sys.executable, "-c", script], cwd=store, check=True, capture_output=True, timeout=300,
                   env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"})


@pytest.mark.slow
def test_pip_install_gives_a_demoire_that_predicts_evaluates_exports_and_serves(tmp_path):
    source = tmp_path / "source"
    for name in _tracked_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # --no-compile as the Makefile installs: what is installed and that it runs is the point, not pip's bytecode
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-compile",
                                "-c", str(ROOT / "constraints.txt"), f"{source}[serve,export]"],
                               capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    demoire = str(venv / "bin" / "demoire")

    work = tmp_path / "elsewhere"  # no checkout, no params.yaml here
    spec = ModelSpec("unet", 8, 2)
    save_model(build_model(spec, seed=0), spec, work / "model")
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(photo).save(work / "photo.jpg", quality=95)
    for index in range(2):
        write_png(work / "pairs" / "moire" / f"p{index}.png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
        write_png(work / "pairs" / "clean" / f"p{index}.png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    _register(work / "model", work)
    env = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([demoire, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
        return done

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import pipeline; print(pipeline.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), where  # the installed package, not the checkout
    assert re.fullmatch(r"demoire \d+\.\d+\.\d+\n", run("--version").stdout)
    run("predict", "photo.jpg", "-o", "out", "--model", "model", "--format", "jpg")
    run("predict", "photo.jpg", "-o", "from-registry", "--model", "models:/demoire@champion")
    assert Image.open(work / "out" / "photo.jpg").size == Image.open(work / "from-registry" / "photo.png").size == (56, 40)
    scores = json.loads(run("evaluate", "--model", "model", "--pairs", "pairs", "--json").stdout)
    assert scores["count"] == 2
    exported = json.loads(run("export", "--model", "models:/demoire@champion", "--format", "onnx", "-o", "model.onnx",
                              "--json").stdout)
    assert (exported["model"], exported["alias"]) == ("models:/demoire/1", "champion")  # the version exported
    run("predict", "photo.jpg", "-o", "onnx-out", "--model", "model.onnx")
    assert Image.open(work / "onnx-out" / "photo.png").size == (56, 40)

    log = work / "serve.log"
    server = subprocess.Popen([demoire, "serve", "--model", "models:/demoire@champion", "--port", "0"], cwd=work,
                              env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (found := re.search(r"at (http://127\.0\.0\.1:\d+/)", log.read_text())):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        url = found[1]
        info = httpx.get(url + "model", timeout=30).json()
        assert info["version"] == "1" and (info["max_side"], info["falloff"]) == (2048, 0.5)  # the infer defaults
        restored = httpx.post(url + "restore", files={"file": ("photo.jpg", (work / "photo.jpg").read_bytes())},
                              timeout=120)
        assert restored.status_code == 200 and restored.headers["content-type"] == "image/png"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    # the core install is light: the pipeline's orchestration is an extra
    lean = subprocess.run([str(venv / "bin" / "python"), "-c", "import prefect"], capture_output=True)
    assert lean.returncode != 0
