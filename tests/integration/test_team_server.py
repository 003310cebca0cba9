"""The team setup: `deploy/mlflow_server.py` (what `make mlflow-server` runs), a real MLflow tracking server on a
real PostgreSQL cluster with served artifacts, and 3 processes registering against it at once."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import _free_port, load_script
from tests.test_registry_transaction import check_invariants, registry_state, start_worker

# Its tests share one module-scoped fixture and build on what the earlier ones left in it: `make test`
# (--dist loadfile) runs the whole module in one xdist process.
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    deploy = load_script("deploy/mlflow_server.py")
    try:
        deploy.postgres_bin("initdb")
    except SystemExit:
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
    home = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = open(home / "server.log", "w")
    server = subprocess.Popen([sys.executable, str(ROOT / "deploy" / "mlflow_server.py"), "--home", str(home),
                               "--port", str(port), "--pg-port", str(_free_port()), "--workers", "1",
                               "--allowed-hosts", f"mlflow-box,mlflow-box:{port}"],
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert server.poll() is None, (home / "server.log").read_text()[-3000:]
        time.sleep(1)
    else:
        server.kill()
        pytest.fail("the MLflow server did not start within 240 s")
    yield url, home
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=120) == 0
    log.close()
    cluster = deploy.cluster_dir(home.resolve())
    assert not (cluster / "postmaster.pid").exists()  # PostgreSQL stopped with the server
    shutil.rmtree(cluster, ignore_errors=True)


def test_three_pipelines_register_at_once_against_the_postgresql_server(team_server, tmp_path):
    url, home = team_server
    workers = [start_worker(tmp_path, seed, psnr, tracking_uri=url)
               for seed, psnr in ((1, 22.0), (2, 22.02), (3, 23.0))]
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
    state = registry_state(url)
    assert sorted(state["versions"], key=int) == ["1", "2", "3"]
    check_invariants(state)
    assert any((home / "artifacts").rglob("model.pt"))  # artifacts stored by the server, not the clients
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()


def test_clients_reach_the_server_by_the_names_it_allows(team_server):
    """A client's URL names the server machine; MLflow refuses Host headers it was not told of (not a private IP)."""
    url, _ = team_server
    port = url.rsplit(":", 1)[1]
    probe = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(probe, headers={"Host": f"mlflow-box:{port}"}, timeout=10).status_code == 200
    assert httpx.get(probe, headers={"Host": f"other-box:{port}"}, timeout=10).status_code == 403
