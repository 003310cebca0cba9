"""Shared fixtures: tiny params that keep every test fast on a 2-core CPU."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import requests
import torch

from pipeline.config import Params, parse_params

PROJECT = Path(__file__).resolve().parents[1]

TINY = {
    "seed": 7,
    "synthesize": {"n_pairs": 12, "size": 48, "workers": 1, "sources": {"bundled": False, "procedural": 6}},
    "preprocess": {"val_fraction": 0.2, "test_fraction": 0.2},
    "train": {"model": "unet", "channels": 8, "depth": 2, "epochs": 2, "batch_size": 4, "patch_size": 32},
    "evaluate": {"grid_count": 2},
    # two epochs on 12 pairs may leave a model below the input, which the gate would then keep out (its own tests)
    "register": {"require_gain_over_input": False},
}


@pytest.fixture
def tiny_raw() -> dict:
    """A fresh copy of the tiny params mapping (tests may edit it)."""
    import copy

    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_params(tiny_raw) -> Params:
    """Validated tiny params."""
    return parse_params(tiny_raw)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def cli_output_settings_reset() -> Iterator[None]:
    """A CLI call's `-q` sets process-wide progress and note settings; no test inherits another's."""
    yield
    from pipeline.cli.common import err
    from pipeline.progress import set_progress_override

    set_progress_override(None)
    err.notes = True


# About how long each module's tests take in CI (`.ci/run`: 2 cores, three workers; from its --durations), for the
# order below. A module that holds slow tests and is missing here counts as SLOW_MODULE_SECONDS: a wrong figure
# costs minutes of the suite's time, never a result.
CI_SECONDS = {
    "tests/integration/test_dvc_repro.py": 650,
    "tests/integration/test_deployments.py": 420,
    "tests/integration/test_dvc_queue.py": 260,
    "tests/test_install.py": 250,
    "tests/integration/test_fresh_clone.py": 220,
    "tests/test_registry_transaction.py": 210,
    "tests/test_cli.py": 180,
    "tests/test_registry.py": 150,
    "tests/flows/test_flows.py": 140,
    "tests/training/test_distributed.py": 110,
    "tests/test_benchmark_scripts.py": 105,
    "tests/flows/test_stage_server.py": 100,
    "tests/test_gpu_check.py": 90,
    "tests/integration/test_team_server.py": 80,
}
SLOW_MODULE_SECONDS = 60


def _expected_seconds(items: list[pytest.Item]) -> dict[str, int]:
    """Each module's CI_SECONDS, else SLOW_MODULE_SECONDS when it holds a `slow` test, else 0."""
    seconds: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        known = CI_SECONDS.get(module, SLOW_MODULE_SECONDS if "slow" in item.keywords else 0)
        seconds[module] = max(seconds.get(module, 0), known)
    return seconds


def pytest_collection_modifyitems(config, items):
    """Run the longest modules first and skip `gpu` tests when CUDA is absent."""
    # Under `-n` (make test), xdist hands whole modules out in the order their first test comes here (with
    # --no-loadscope-reorder; by default it would start the modules with the most tests first, which put three
    # one-test modules of 3-4 minutes each last, on one worker). Longest first, the minutes-long ones run side by
    # side and the short ones fill the gaps. The sort is stable: a module's tests keep their order.
    seconds = _expected_seconds(items)
    items.sort(key=lambda item: -seconds[item.nodeid.split("::")[0]])
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mlflow_server(root: Path, port: int, *options: str) -> subprocess.Popen:
    """A real `mlflow server` on SQLite at 127.0.0.1:`port`, once it answers."""
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{root / 'server.db'}", "--default-artifact-root", str(root / "artifacts"),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *options],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and server.poll() is None:  # one that exits (its port taken) fails at once
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            time.sleep(0.5)
    if server.poll() is not None:
        raise RuntimeError(f"mlflow server on port {port} exited with code {server.returncode} before answering")
    stop_server(server)
    raise RuntimeError("mlflow server did not start within 180 s")


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` on 127.0.0.1 for the whole session; stopped by process id."""
    import httpx

    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited: {(home / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    else:
        process.kill()
        raise RuntimeError("prefect server did not start within 180 s")
    yield url
    os.killpg(process.pid, 15)
    process.wait(timeout=30)
    log.close()


@pytest.fixture
def prefect_api(prefect_server, monkeypatch):
    """Point this test process (and its subprocesses) at the session's Prefect server."""
    from prefect.context import refresh_global_settings_context

    # Global settings, not a context's: threads Prefect starts (event forwarders) read those, and
    # would otherwise start a temporary server of their own, stopped noisily at interpreter exit.
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    refresh_global_settings_context()
    yield prefect_server
    monkeypatch.delenv("PREFECT_API_URL")
    refresh_global_settings_context()


def load_script(relative: str) -> ModuleType:
    """A script of the project that is no package's module (benchmarks/, deploy/), imported by its path.

    Registered in sys.modules under its name (dataclasses and type hints look their module up there).
    """
    path = PROJECT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
