"""The real `dvc repro` in a temporary git repository with tiny params, then the registry it left."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(args, cwd, env, timeout=900):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_server):
    """A copy of this repository's tracked and unignored files, committed, with tiny params."""
    repo = tmp_path_factory.mktemp("project")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():  # DVC needs every section a stage lists, so merge
        params[section] = {**params[section], **values} if isinstance(values, dict) else values
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("MLFLOW_TRACKING_URI", None)
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        _run(args, repo, env)
    return repo, env


def _registry(repo, env):
    """Aliases and version tags read back from the project's SQLite MLflow store, in a fresh process."""
    script = (
        "import json, mlflow; from mlflow.tracking import MlflowClient; c = MlflowClient();"
        "vs = c.search_model_versions(\"name='demoire'\");"
        "print(json.dumps({'aliases': {a: str(c.get_model_version_by_alias('demoire', a).version) for a in ('champion', 'challenger')},"
        "'versions': {str(v.version): v.tags for v in vs}}))"
    )
    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    return json.loads(_run([sys.executable, "-c", script], repo, env).stdout.strip().splitlines()[-1])


def test_repro_produces_outputs_metrics_and_champion(project):
    repo, env = project
    _run(["dvc", "repro"], repo, env)
    for rel in ("data/synthesize/manifest.parquet", "data/preprocess/pairs.parquet", "data/train/model.pt",
                "data/train/history.csv", "data/evaluate/per_image.csv", "data/evaluate/grid.png", "dvc.lock",
                "data/synth_report/input_psnr.png", "data/synth_report/residual_spectrum.csv"):
        assert (repo / rel).is_file(), rel
    assert len(list((repo / "data/synthesize/moire").glob("*.png"))) == 12
    metrics = json.loads((repo / "data/evaluate/metrics.json").read_text())
    assert {"psnr", "ssim", "mse", "identity_psnr", "identity_ssim", "identity_mse", "count"} <= set(metrics)
    shown = _run(["dvc", "metrics", "show", "--json"], repo, env).stdout
    assert "identity_psnr" in shown
    plots = _run(["dvc", "plots", "show", "--json"], repo, env).stdout
    assert "data/synth_report/residual_spectrum.csv" in plots

    registration = json.loads((repo / "data/register/registration.json").read_text())
    assert registration["version"] == "1" and registration["promote"] is True
    registry = _registry(repo, env)
    assert registry["aliases"] == {"champion": "1", "challenger": "1"}
    assert registry["versions"]["1"]["promotion"] == "promoted"
    assert float(registry["versions"]["1"]["test_psnr"]) == pytest.approx(metrics["psnr"], abs=1e-6)

    second = _run(["dvc", "repro"], repo, env, timeout=120)
    assert "Data and pipelines are up to date" in second.stdout


def test_experiment_variant_registers_challenger_and_gates_champion(project):
    repo, env = project
    _run(["dvc", "exp", "run", "-S", "train.epochs=1"], repo, env)
    registry = _registry(repo, env)
    v1, v2 = float(registry["versions"]["1"]["test_psnr"]), float(registry["versions"]["2"]["test_psnr"])
    assert registry["aliases"]["challenger"] == "2"
    assert registry["aliases"]["champion"] == ("2" if v2 > v1 else "1")
    assert registry["versions"]["2"]["promotion"] == ("promoted" if v2 > v1 else "not_promoted")


def _checkpoint_epoch(path: Path) -> int:
    """Epoch of the last checkpoint written (0 before the first); checkpoints are renamed into place whole."""
    import torch

    return torch.load(path, weights_only=True)["epoch"] if path.is_file() else 0


def test_a_killed_training_resumes_on_the_next_repro(project):
    import signal
    import time

    import pandas as pd

    repo, env = project
    params_path = repo / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["train"]["epochs"] = 80
    params_path.write_text(yaml.safe_dump(params))
    checkpoint = repo / "data/train/checkpoint.pt"
    run = subprocess.Popen(["dvc", "repro", "train"], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while _checkpoint_epoch(checkpoint) < 3 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # dvc, the flow and the trainer, as an OOM killer or preemption would
        run.wait()
    killed_at = _checkpoint_epoch(checkpoint)
    assert 3 <= killed_at < 80, "the run was not killed mid-training"

    rerun = _run(["dvc", "repro", "train"], repo, env)
    assert f"resuming from data/train/checkpoint.pt after epoch {killed_at}" in rerun.stdout + rerun.stderr
    history = pd.read_csv(repo / "data/train/history.csv")
    assert list(history.epoch) == list(range(1, 81)) and _checkpoint_epoch(checkpoint) == 80
    params_path.write_text(original)


def test_invalid_params_stop_repro_with_one_line(project):
    repo, env = project
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["synthesize"]["optics"] = {"distance_mm": [500.0, 300.0]}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "synthesize.optics.distance_mm = [500.0, 300.0]: range minimum 500.0 is greater than its maximum 300.0" in result.stderr + result.stdout
    assert not (repo / "data/synthesize").exists()
