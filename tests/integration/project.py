"""A throwaway copy of this repository, committed in its own git repo, with the tiny params."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]


def run(args, cwd, env, timeout=900) -> subprocess.CompletedProcess:
    """Run a command; fail the test with the tail of its output if it exits non-zero."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


GIT_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def copy_project(repo: Path) -> None:
    """Copy the tracked and unignored files into `repo`, merge the tiny params, commit: a fresh clone."""
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
    env = {**os.environ, **GIT_IDENTITY}
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        run(args, repo, env)


def make_project(repo: Path, prefect_api_url: str) -> dict[str, str]:
    """A fresh clone in `repo` (copy_project); return the env that runs it with this interpreter's venv."""
    copy_project(repo)
    env = {**os.environ, **GIT_IDENTITY, "PREFECT_API_URL": prefect_api_url,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def read_registry(repo: Path, env: dict[str, str]) -> dict:
    """Aliases and version tags read back from the project's SQLite MLflow store, in a fresh process."""
    import json

    script = (
        "import json, mlflow; from mlflow.tracking import MlflowClient; c = MlflowClient();"
        "vs = c.search_model_versions(\"name='demoire'\");"
        "print(json.dumps({'aliases': {a: str(c.get_model_version_by_alias('demoire', a).version) for a in ('champion', 'challenger')},"
        "'versions': {str(v.version): v.tags for v in vs}}))"
    )
    return query_store(repo, env, script)


def query_store(repo: Path, env: dict[str, str], script: str):
    """The JSON a Python `script` prints last, run in a fresh process against the project's SQLite MLflow store."""
    import json

    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    return json.loads(run([sys.executable, "-c", script], repo, env).stdout.strip().splitlines()[-1])
