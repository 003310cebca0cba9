"""The README's first command, as a new user runs it: `make pipeline` in a fresh clone whose PATH
holds some other `python` first, and nothing of this project installed anywhere."""

import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.integration.project import copy_project, read_registry, run

pytestmark = pytest.mark.slow

FOREIGN_PYTHON = """#!/bin/sh
echo "foreign python: not the project's interpreter" >&2
exit 97
"""


def user_environment(tmp_path: Path) -> dict[str, str]:
    """A shell's environment with no project venv on PATH and a failing `python`/`python3` ahead of everything."""
    foreign = tmp_path / "foreign-bin"
    foreign.mkdir()
    for name in ("python", "python3"):
        (foreign / name).write_text(FOREIGN_PYTHON)
        (foreign / name).chmod(0o755)
    venv_bin = str(Path(sys.executable).parent)
    kept = [d for d in os.environ["PATH"].split(os.pathsep) if d and d != venv_bin]
    env = {key: value for key, value in os.environ.items()
           if key not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PREFECT_API_URL", "MLFLOW_TRACKING_URI",
                          "PREFECT_HOME", "PYTHONDONTWRITEBYTECODE"}}  # a user's Python writes __pycache__
    env["PATH"] = os.pathsep.join([str(foreign), *kept])
    assert run(["sh", "-c", "python; echo $?"], tmp_path, env).stdout.strip() == "97"
    return env


def test_make_pipeline_in_a_fresh_clone_with_a_foreign_python(tmp_path):
    repo = tmp_path / "clone"
    repo.mkdir()
    copy_project(repo)
    env = user_environment(tmp_path)
    make = ["make", "pipeline"]
    if shutil.which("python3.11", path=env["PATH"]) is None:  # the Makefile's default base interpreter
        make.append(f"PYTHON={sys._base_executable}")

    run(make, repo, env, timeout=1500)

    registry = read_registry(repo, env)
    assert registry["aliases"] == {"champion": "1", "challenger": "1"}
    assert registry["versions"]["1"]["promotion"] == "promoted"
    assert (repo / ".prefect").is_dir() and (repo / "mlflow.db").is_file()  # state inside the clone

    # The README's next steps, in an activated venv on the same PATH.
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    activated = (f". .venv/bin/activate && dvc repro && demoire check-params && "
                 f"demoire predict {tmp_path / 'photo.png'} -o {tmp_path / 'restored'} --model models:/demoire@champion")
    shown = run(["bash", "-c", activated], repo, env, timeout=600)
    assert "Data and pipelines are up to date" in shown.stdout
    assert Image.open(tmp_path / "restored" / "photo.png").size == (56, 40)

    # Against the committed dvc.lock, the code the stages ran is the code it records (no bytecode counted).
    run(["git", "checkout", "dvc.lock"], repo, env)
    status = run(["bash", "-c", ". .venv/bin/activate && dvc status"], repo, env).stdout
    assert not re.search(r"modified:\s+(pipeline|flows)/", status), status
