"""Python's bytecode beside a stage's code dependencies does not make DVC see the stage as changed."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from tests.integration.project import GIT_IDENTITY, ROOT, run


def dvc_status_after_bytecode(repo: Path) -> str:
    """`dvc status` of a one-stage project (code dep `pkg`) after Python wrote bytecode into `pkg`."""
    env = {**os.environ, **GIT_IDENTITY}
    (repo / "pkg").mkdir()
    (repo / "pkg" / "mod.py").write_text("VALUE = 1\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  make:\n    cmd: touch out.txt\n    deps: [pkg]\n    outs: [out.txt]\n")
    dvc = [sys.executable, "-m", "dvc"]
    for args in (["git", "init", "-q"], [*dvc, "init", "-q"], [*dvc, "repro", "-q"]):
        run(args, repo, env)
    (repo / "pkg" / "__pycache__").mkdir()
    (repo / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\xa7\r\r\n bytecode")
    return run([*dvc, "status"], repo, env).stdout


def test_the_projects_dvcignore_leaves_bytecode_out_of_code_dependencies(tmp_path):
    repo = tmp_path / "project"
    repo.mkdir()
    shutil.copy(ROOT / ".dvcignore", repo / ".dvcignore")
    assert "Data and pipelines are up to date" in dvc_status_after_bytecode(repo)


def test_without_it_bytecode_changes_the_stage(tmp_path):
    """The control: what the project's .dvcignore prevents."""
    repo = tmp_path / "project"
    repo.mkdir()
    assert re.search(r"modified:\s+pkg", dvc_status_after_bytecode(repo))
