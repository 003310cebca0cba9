"""Stage processes without PREFECT_API_URL share one temporary Prefect server, which stops when idle."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGE = """
import os, sys
from prefect import flow
from flows._entry import prefect_api

@flow(name="stage-" + sys.argv[1])
def stage():
    return 1

with prefect_api():
    stage()
    print(os.environ["PREFECT_API_URL"])
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_consecutive_stages_share_one_server_that_stops_once_idle(tmp_path):
    home = tmp_path / "prefect-home"
    # 30 s: the second stage must start within the idle time, and a loaded machine (the suite runs in
    # parallel) can take longer than 5 s to start a Python that imports Prefect.
    env = {**os.environ, "PREFECT_HOME": str(home), "DEMOIRE_STAGE_SERVER_IDLE_S": "30"}
    for name in ("PREFECT_API_URL", "PREFECT_UI_URL", "PREFECT_PORT"):
        env.pop(name, None)
    links = []

    def stage(name: str) -> str:
        result = subprocess.run([sys.executable, "-c", STAGE, name], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        links.extend(re.findall(r"View at (\S+)", result.stdout + result.stderr))
        return result.stdout.strip().splitlines()[-1]

    first = stage("a")
    pid = json.loads((home / "stage-server.json").read_text())["pid"]
    try:
        assert stage("b") == first  # the second stage found the first one's server
        runs = httpx.post(f"{first}/flow_runs/filter", json={}, timeout=30).json()
        assert sorted(run["state_type"] for run in runs) == ["COMPLETED", "COMPLETED"]
        # the runs' links lead to `make server`'s UI, which serves the same database, not to this UI-less server
        assert sorted(links) == sorted(f"http://127.0.0.1:4200/runs/flow-run/{run['id']}" for run in runs)
        assert (home / "prefect.db").is_file()
        assert list((home / "stage-server-leases").iterdir()) == []  # both stages let go
        deadline = time.monotonic() + 120
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _alive(pid), "the shared server outlived its idle time"
        assert not (home / "stage-server.json").exists()
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{first}/health", timeout=5)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)


@pytest.mark.slow
def test_a_stage_command_boots_the_server_before_its_imports_and_it_stops_once_idle(tmp_path):
    home = tmp_path / "prefect-home"
    # 20 s idle: with 5, a loaded 2-core box once had the server up and idle-stopped before the stage's own imports
    # were done, and its record was gone by the time it was read
    env = {**os.environ, "PREFECT_HOME": str(home), "DEMOIRE_STAGE_SERVER_IDLE_S": "20"}
    env.pop("PREFECT_API_URL", None)
    # Invalid params: the stage stops before any flow, yet the server was already on its way.
    result = subprocess.run([sys.executable, "-m", "flows.preprocess", "--params", str(tmp_path / "missing.yaml"),
                             "--data", "d", "--out", "o", "--summary", "s"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "file not found" in result.stderr
    pid = json.loads((home / "stage-server.json").read_text())["pid"]
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None and time.monotonic() < deadline:
            time.sleep(0.2)
            url = json.loads((home / "stage-server.json").read_text())["url"]
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _alive(pid), "the shared server outlived its idle time"
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
