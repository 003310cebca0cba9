"""One temporary Prefect server shared by consecutive stage processes, such as those of a `dvc repro`.

Without PREFECT_API_URL every stage would start Prefect's temporary server for itself: 5 s per
stage on a 2-core machine, 9 % of a default `dvc repro`. Instead the first stage starts this
module in the background. It runs the server Prefect's own temporary one is (the same uvicorn
command and ephemeral-mode settings as `prefect.server.api.server.SubprocessASGIServer`, started
directly, without importing Prefect's server here first: that import alone takes 3 s) and records
its URL in `$PREFECT_HOME/stage-server.json`. Later stages find and reuse it. While a stage runs
it holds a lease, a file named by its process id; the server stops itself once no live process
has held a lease for DEMOIRE_STAGE_SERVER_IDLE_S seconds (default 60), so nothing outlives the run
by long. A file lock serialises the checks, so a stage never picks a server that is about to stop.
A stage command starts the server before importing its libraries (`flows/__init__.py`) and waits
for it only when its flow begins, so the server boots while torch and friends import.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from flows import PROJECT_DIR

STATE_FILE, LEASE_DIR, LOCK_FILE, LOG_FILE = "stage-server.json", "stage-server-leases", "stage-server.lock", "stage-server.log"
DEFAULT_IDLE_S = 60.0
# What SubprocessASGIServer (prefect 3.8.8, pinned) sets for its temporary server: ephemeral mode
# (no scheduler and the like), no UI.
EPHEMERAL_SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}


@contextmanager
def shared_server(home: Path) -> Iterator[str]:
    """The API URL of the shared server under `home` (started if none runs), leased while in use."""
    home.mkdir(parents=True, exist_ok=True)
    lease = home / LEASE_DIR / str(os.getpid())
    with _locked(home):
        url = _live_url(home) or _wait_until_up(home, _starting_pid(home) or _spawn(home))
        lease.parent.mkdir(exist_ok=True)
        lease.touch()
    try:
        yield url
    finally:
        lease.unlink(missing_ok=True)


def start_early(home: Path) -> None:
    """Start the shared server without waiting, unless one runs or is starting, so it boots while a stage imports."""
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home):
        if not _live_url(home) and not _starting_pid(home):
            _spawn(home)


@contextmanager
def _locked(home: Path) -> Iterator[None]:
    """Hold the server's file lock (released by the OS if the holder dies)."""
    with open(home / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_state(home: Path) -> dict | None:
    """The recorded server: {"pid", "url"}, with url None while it starts; None when there is none."""
    try:
        return json.loads((home / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_state(home: Path, pid: int, url: str | None) -> None:
    """Record the server atomically, so a reader never sees half a file."""
    partial = home / (STATE_FILE + ".tmp")
    partial.write_text(json.dumps({"pid": pid, "url": url}))
    partial.replace(home / STATE_FILE)


def _live_url(home: Path) -> str | None:
    """The recorded server's URL if its process is alive and it answers a health check."""
    state = _read_state(home)
    if not state or not state["url"] or not _alive(state["pid"]):
        return None
    try:
        healthy = httpx.get(f"{state['url']}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        healthy = False
    return state["url"] if healthy else None


def _starting_pid(home: Path) -> int | None:
    """The process id of a recorded server that is still starting."""
    state = _read_state(home)
    return state["pid"] if state and not state["url"] and _alive(state["pid"]) else None


def _alive(pid: int) -> bool:
    """Whether a process with this id runs (a child of ours that exited is reaped and counts as gone)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:  # not our child
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _spawn(home: Path) -> int:
    """Start the server process in its own session, record it as starting, and return its process id."""
    with open(home / LOG_FILE, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "flows.stage_server", str(home)], cwd=PROJECT_DIR,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _write_state(home, process.pid, None)
    return process.pid


def _wait_until_up(home: Path, pid: int) -> str:
    """Wait until the server `pid` answers; its URL."""
    timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        url = _live_url(home)
        if url:
            return url
        if not _alive(pid):
            tail = (home / LOG_FILE).read_text()[-2000:]
            raise RuntimeError(f"the shared Prefect server exited while starting:\n{tail}")
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    raise RuntimeError(f"the shared Prefect server did not start within {timeout:.0f} s; see {home / LOG_FILE}")


def _live_leases(home: Path) -> int:
    """Count leases of live processes, removing those of processes that died without letting go."""
    live = 0
    for lease in (home / LEASE_DIR).glob("*"):
        if lease.name.isdigit() and _alive(int(lease.name)):
            live += 1
        else:
            lease.unlink(missing_ok=True)
    return live


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _uvicorn(port: int) -> subprocess.Popen:
    """Prefect's server app under uvicorn on 127.0.0.1:`port`, in ephemeral mode."""
    command = [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"]
    return subprocess.Popen(command, env={**os.environ, **EPHEMERAL_SERVER_ENV})


def _wait_for_health(url: str, server: subprocess.Popen, timeout: float) -> None:
    """Return once the server answers its health check; raise if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {server.returncode} while starting")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the Prefect server did not answer within {timeout:.0f} s")


def serve(home: Path, idle_s: float) -> None:
    """Run the server until no lease has been held for `idle_s` seconds, or SIGTERM."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    port = _free_port()
    server = _uvicorn(port)
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_for_health(url, server, float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")))
        _write_state(home, os.getpid(), url)
        idle_since = time.monotonic()
        while not stopping and server.poll() is None:
            time.sleep(1)
            with _locked(home):
                if _live_leases(home):
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > idle_s:
                    (home / STATE_FILE).unlink()  # under the lock: no stage can pick this server any more
                    break
    finally:
        (home / STATE_FILE).unlink(missing_ok=True)
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), float(os.environ.get("DEMOIRE_STAGE_SERVER_IDLE_S", DEFAULT_IDLE_S)))
