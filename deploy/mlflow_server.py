"""A team MLflow tracking server backed by PostgreSQL, artifacts served by the server (`make mlflow-server`).

    python deploy/mlflow_server.py [--home .mlflow-server] [--port 5000] [--backend-store-uri postgresql://…]

Without --backend-store-uri it runs a PostgreSQL cluster of its own (Debian's `postgresql` package:
`apt-get install -y postgresql`), created on first use, listening on 127.0.0.1 only, and stops it when
the server stops (SIGTERM, Ctrl-C). PostgreSQL refuses to run as root; as root the cluster is run by
the `postgres` user and kept under /var/lib/postgresql. Artifacts are stored under HOME/artifacts and
served by the tracking server, so clients need nothing but MLFLOW_TRACKING_URI=http://HOST:PORT.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

DATABASE = "mlflow"
RUNUSER_PLACES = ("/usr/sbin/runuser", "/sbin/runuser")  # Debian's, off a root shell's PATH when sbin is left out


def postgres_bin(tool: str) -> str:
    """Path of a PostgreSQL server program: on PATH, else the newest /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(tool)
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"),
                        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0)
    if found is None and not candidates:
        raise SystemExit(f"error: PostgreSQL's {tool} not found; install Debian's postgresql "
                         "(apt-get install -y postgresql), or pass --backend-store-uri")
    return candidates[-1] if candidates else found


def runuser() -> str:
    """util-linux's runuser: on PATH, else where Debian puts it (a root shell's PATH may lack the sbin folders)."""
    found = shutil.which("runuser") or next((path for path in RUNUSER_PLACES if os.access(path, os.X_OK)), None)
    if found is None:
        raise SystemExit("error: runuser not found; as root the PostgreSQL cluster is run as the postgres user "
                         "through util-linux's runuser, or pass --backend-store-uri")
    return found


def as_postgres_user(command: list[str]) -> list[str]:
    """Root cannot run PostgreSQL: run its programs as the `postgres` user then."""
    return [runuser(), "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def cluster_dir(home: Path) -> Path:
    """Where the cluster lives: HOME/postgres, or for root (the postgres user must reach it) /var/lib/postgresql."""
    if os.geteuid() != 0:
        return home / "postgres"
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]
    return Path("/var/lib/postgresql") / f"demoire-mlflow-{digest}"


def start_postgres(home: Path, port: int) -> tuple[str, Path]:
    """Create the cluster on first use, start it on 127.0.0.1:`port`; return (backend store URI, data folder)."""
    data = cluster_dir(home)
    if not (data / "PG_VERSION").is_file():
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        subprocess.run(as_postgres_user([postgres_bin("initdb"), "-D", str(data), "--auth=trust", "-U", "mlflow",
                                         "--encoding=UTF8"]), check=True, capture_output=True)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {data}"
    subprocess.run(as_postgres_user([postgres_bin("pg_ctl"), "-D", str(data), "-o", options, "-l",
                                     str(data / "server.log"), "-w", "-t", "120", "start"]), check=True,
                   capture_output=True)
    created = subprocess.run(as_postgres_user([postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                                               "mlflow", DATABASE]), capture_output=True, text=True)
    if created.returncode != 0 and "already exists" not in created.stderr:
        raise SystemExit(f"error: createdb failed: {created.stderr.strip()}")
    return f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/{DATABASE}", data  # psycopg2-binary, pinned


def stop_postgres(data: Path) -> None:
    subprocess.run(as_postgres_user([postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                   capture_output=True)


def allowed_hosts(extra: str) -> str:
    """MLflow's default Host headers (localhost, private IPs) and `extra`: its --allowed-hosts replaces the defaults,
    so they are listed too (from MLflow itself, to stay what it allows by default)."""
    from mlflow.server.security_utils import get_default_allowed_hosts

    return ",".join([*get_default_allowed_hosts(), *(host.strip() for host in extra.split(",") if host.strip())])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(".mlflow-server"), help="artifacts (and the cluster)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--pg-port", type=int, default=5433, help="port of the cluster this script runs")
    parser.add_argument("--backend-store-uri", help="an existing database instead of a cluster of our own")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    # MLflow answers 403 ("Invalid Host header") to a client whose URL names this machine other than by
    # localhost or a private IP (10.*, 172.16-31.*, 192.168.*): a host name or a public address must be listed.
    parser.add_argument("--allowed-hosts", help="Host headers to accept beyond MLflow's default, e.g. "
                                                "'mlflow-box,mlflow-box:5000' (mlflow server --allowed-hosts)")
    args = parser.parse_args()
    home = args.home.resolve()
    (home / "artifacts").mkdir(parents=True, exist_ok=True)
    data = None
    uri = args.backend_store_uri
    if uri is None:
        uri, data = start_postgres(home, args.pg_port)
    hosts = ["--allowed-hosts", allowed_hosts(args.allowed_hosts)] if args.allowed_hosts else []
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                               "--artifacts-destination", str(home / "artifacts"), "--serve-artifacts",
                               "--host", args.host, "--port", str(args.port), "--workers", str(args.workers), *hosts])
    stopping = []

    def stop(signum, frame):
        stopping.append(signum)
        server.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"MLflow tracking server on http://{args.host}:{args.port} (backend {uri}); "
          f"clients: export MLFLOW_TRACKING_URI=http://{args.host}:{args.port}", flush=True)
    try:
        while server.poll() is None:
            time.sleep(0.5)
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=60)
        if data is not None:
            stop_postgres(data)
    sys.exit(0 if stopping else server.returncode)


if __name__ == "__main__":
    main()
