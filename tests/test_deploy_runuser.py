"""deploy/mlflow_server.py finds runuser where Debian puts it, whatever PATH a root shell has."""

from __future__ import annotations

import os

import pytest

from tests.conftest import load_script


def test_runuser_is_found_outside_path(monkeypatch):
    deploy = load_script("deploy/mlflow_server.py")
    installed = next((path for path in deploy.RUNUSER_PLACES if os.access(path, os.X_OK)), None)
    if installed is None:
        pytest.skip("util-linux's runuser is not installed here")
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")  # a root shell without the sbin folders
    if deploy.shutil.which("runuser"):
        pytest.skip("runuser is in /usr/bin here (merged /usr): PATH cannot hide it")
    assert deploy.runuser() == installed
    command = deploy.as_postgres_user(["initdb", "-D", "x"])
    assert command == ([installed, "-u", "postgres", "--", "initdb", "-D", "x"] if os.geteuid() == 0
                       else ["initdb", "-D", "x"])


def test_missing_runuser_is_one_clear_line(monkeypatch):
    deploy = load_script("deploy/mlflow_server.py")
    monkeypatch.setattr(deploy.shutil, "which", lambda name: None)
    monkeypatch.setattr(deploy.os, "access", lambda path, mode: False)
    with pytest.raises(SystemExit, match="runuser not found.*--backend-store-uri"):
        deploy.runuser()
