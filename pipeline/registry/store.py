"""The tracking store: which MLflow store a project uses, a client on it, and reading aliases.

A project's own store is `mlflow.db` (SQLite) with artifacts in `mlartifacts/`, both in the project
root; MLFLOW_TRACKING_URI points elsewhere, e.g. at a team tracking server (`make mlflow-server`).
"""

from __future__ import annotations

import os
import re
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit, urlunsplit

import mlflow
import requests  # MLflow's own HTTP client: installed wherever MLflow is
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from pipeline.errors import DemoireError, InputDataError, ModelNotFoundError, ServiceUnavailableError, first_line

# MLflow creates a new SQLite store's schema on first use; two processes doing it at once collide
# ("table already exists", "duplicate column name"), so the first use is serialised by a file lock.
STORE_INIT_TIMEOUT_S = 300
SERVER_PROBE_TIMEOUT_S = 5.0


def default_tracking_uri(project_dir: Path) -> str:
    """MLFLOW_TRACKING_URI when set, else an SQLite store inside the project."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    database = Path(project_dir).resolve() / "mlflow.db"
    if "?" in str(database):  # SQLAlchemy reads the rest as a query, and percent-escapes stay as written
        raise InputDataError(f"{database.parent}: an SQLite store's URL cannot name a folder whose path holds '?' "
                             "(it would be another file); rename the folder or set MLFLOW_TRACKING_URI")
    return f"sqlite:///{database}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of an `sqlite:///` tracking URI, None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def use_tracking_store(project_dir: Path, experiment: str) -> str:
    """Point MLflow at the store and experiment; the project's own store keeps artifacts in its mlartifacts/.

    MLflow records an experiment's artifact location as an absolute path (it resolves relative ones
    when the experiment is created, and has no API to change it). A store copied or moved with its
    checkout would therefore keep writing artifacts into the original's mlartifacts/; that is
    refused with one line instead.
    """
    explicit = "MLFLOW_TRACKING_URI" in os.environ  # read first: mlflow.set_tracking_uri exports it
    uri = default_tracking_uri(project_dir)
    check_server_answers(uri)
    mlflow.set_tracking_uri(uri)
    database = sqlite_path(uri)
    if database is None:
        _ensure_experiment(experiment, None)
    else:
        database.parent.mkdir(parents=True, exist_ok=True)
        artifacts = None if explicit else (database.parent / "mlartifacts").as_uri()
        with FileLock(f"{database}.lock", timeout=STORE_INIT_TIMEOUT_S):
            _ensure_experiment(experiment, artifacts)
    mlflow.set_experiment(experiment)
    return uri


def redacted(uri: str) -> str:
    """A tracking URI without the password it may carry (`http://user:secret@host` → `http://user:***@host`)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


PROBE_ENDPOINT = "api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"  # read-only, on every server


def _missing_scheme(uri: str) -> bool:
    """A server's address written without its scheme (`host:5000`); a folder (MLflow's file store) and names MLflow
    resolves itself (`databricks`) are not."""
    return re.fullmatch(r"[\w.-]+:\d+(/.*)?", uri) is not None


def check_server_answers(uri: str, timeout_s: float = SERVER_PROBE_TIMEOUT_S) -> None:
    """One quick request to the tracking server's API: a dead server, a wrong URL, refused credentials or a
    refused host name are one line each, not minutes of MLflow's retries or a page of its traceback."""
    shown = f"MLFLOW_TRACKING_URI={redacted(uri)}"
    if _missing_scheme(uri):  # MLflow would take it for a folder of its file store
        raise InputDataError(f"{shown}: a server's address without its scheme; write http://{uri} (or https://)")
    if not uri.startswith(("http://", "https://")):
        _check_database_answers(uri, shown, timeout_s)
        return
    try:
        answer = requests.get(f"{uri.rstrip('/')}/{PROBE_ENDPOINT}", timeout=timeout_s, **_http_settings())
    except requests.exceptions.SSLError as exc:
        raise InputDataError(f"{shown}: TLS failed ({_reason(exc)}); set MLFLOW_TRACKING_SERVER_CERT_PATH to the "
                             "server's CA bundle (or MLFLOW_TRACKING_INSECURE_TLS=true)") from None
    except requests.RequestException as exc:
        raise ServiceUnavailableError(
            f"{shown}: no MLflow server answers ({type(exc).__name__}); start it "
            "(make mlflow-server) or unset MLFLOW_TRACKING_URI to use the project's mlflow.db") from None
    if answer.status_code >= 500:  # a proxy's 502 while MLflow restarts, an overloaded server
        raise ServiceUnavailableError(f"{shown}: the server answers HTTP {answer.status_code}; it may be restarting")
    problem = _probe_problem(answer)
    if problem:
        raise InputDataError(f"{shown}: {problem}")


DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}  # the stores MLflow reaches over TCP


def _check_database_answers(uri: str, shown: str, timeout_s: float) -> None:
    """For a database store on a host, one TCP connection to it: a dead database is one line in seconds, not
    SQLAlchemy's retries for minutes and a page of traceback."""
    parts = urlsplit(uri)
    scheme, _, driver = parts.scheme.partition("+")  # postgresql+psycopg2
    query = parse_qs(parts.query)
    try:
        port = parts.port
    except ValueError:  # several hosts (host1:5432,host2:5432): left to the driver
        return
    # no host, a socket or host given in the query, or an ODBC data source name: left to the driver
    if (scheme not in DATABASE_PORTS or not parts.hostname or {"host", "unix_socket"} & set(query)
            or (driver == "pyodbc" and port is None)):
        return
    port = port or DATABASE_PORTS[scheme]
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        raise ServiceUnavailableError(f"{shown}: no database server answers at {parts.hostname}:{port} "
                                      f"({exc.strerror or type(exc).__name__}); start it, or unset "
                                      "MLFLOW_TRACKING_URI to use the project's mlflow.db") from None


def _http_settings() -> dict:
    """requests' TLS and auth arguments from MLflow's own environment variables, as its client reads them."""
    env = os.environ
    verify: bool | str = env.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True
    if env.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        verify = False
    settings: dict = {"verify": verify, "cert": env.get("MLFLOW_TRACKING_CLIENT_CERT_PATH") or None}
    if env.get("MLFLOW_TRACKING_USERNAME"):
        settings["auth"] = (env["MLFLOW_TRACKING_USERNAME"], env.get("MLFLOW_TRACKING_PASSWORD", ""))
    elif env.get("MLFLOW_TRACKING_TOKEN"):
        settings["headers"] = {"Authorization": f"Bearer {env['MLFLOW_TRACKING_TOKEN']}"}
    return settings


def _probe_problem(answer: requests.Response) -> str | None:
    """What an answer to the probe says is wrong; None when an MLflow API answered (even 'no such experiment')."""
    if answer.status_code == 401:
        return ("the server asks for credentials; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                "(or MLFLOW_TRACKING_TOKEN)")
    if answer.status_code == 403 and "Invalid Host header" in answer.text:
        return (f"the server refuses the host name {urlsplit(answer.url).netloc!r}; start it with "
                "--allowed-hosts naming it (`MLFLOW_ALLOWED_HOSTS=… make mlflow-server` here), or use the "
                "address it allows")
    if answer.status_code == 403:
        return "the server refuses these credentials (HTTP 403)"
    try:
        body = answer.json()
    except ValueError:
        body = None
    if answer.ok or (isinstance(body, dict) and "error_code" in body):
        return None
    return (f"no MLflow API at this URL (HTTP {answer.status_code} for /{PROBE_ENDPOINT.split('?')[0]}); "
            "give the server's root URL, without a path")


def _reason(exc: Exception) -> str:
    """The innermost reason of a requests error, short."""
    text = str(exc)
    return (text.rsplit("(Caused by ", 1)[-1].rstrip(")") if "(Caused by " in text else text)[:200]


def _ensure_experiment(name: str, artifacts: str | None) -> None:
    """Create the experiment (artifacts in `artifacts` when given) unless it exists; check where it stores artifacts."""
    existing = mlflow.get_experiment_by_name(name)
    if existing is None:
        try:
            mlflow.create_experiment(name, artifact_location=artifacts)
        except MlflowException as exc:  # another process created it first
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        return
    if artifacts is not None and existing.artifact_location.rstrip("/") != artifacts.rstrip("/"):
        raise InputDataError(
            f"MLflow experiment {name!r} of this store writes artifacts to {existing.artifact_location}, not to "
            f"this project's {artifacts} (mlflow.db was copied or moved from another checkout); set "
            f"register.experiment to a new name, or MLFLOW_TRACKING_URI to another store")


def connect(project_dir: Path) -> MlflowClient:
    """A client on the project's store (MLFLOW_TRACKING_URI, else mlflow.db); a missing SQLite file, or a server
    that does not answer, is an error (MLflow would create an empty store, or retry for minutes)."""
    uri = default_tracking_uri(project_dir)
    check_server_answers(uri)
    store = sqlite_path(uri)
    if store is not None and not store.is_file():  # MLflow would silently create an empty store here
        raise ModelNotFoundError(f"no MLflow store at {store}; `dvc repro` creates it (or set MLFLOW_TRACKING_URI)")
    mlflow.set_tracking_uri(uri)
    try:  # one read: a store MLflow cannot use (an unknown scheme, its retired file store) is one line here
        client = MlflowClient()
        client.search_registered_models(max_results=1)
    except Exception as exc:  # MLflow's own errors, and its drivers' (SQLAlchemy, psycopg2), which it lets through
        detail = f"{type(exc).__name__}: {first_line(str(exc).strip())}"
        if transient_store_error(exc):  # worth another try: the stages retry these
            raise ServiceUnavailableError(f"MLFLOW_TRACKING_URI={redacted(uri)}: the store did not answer "
                                          f"({detail})") from None
        raise InputDataError(f"MLFLOW_TRACKING_URI={redacted(uri)}: MLflow cannot use this store ({detail})") from None
    return client


def transient_store_error(exc: BaseException) -> bool:
    """Whether a store's error may pass when tried again: no connection, a timeout, HTTP 5xx or 429, a database that
    did not answer; not a missing artifact (404) or a store MLflow cannot use."""
    if isinstance(exc, requests.RequestException):
        return True
    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
        return status == 429 or (status >= 500 and exc.error_code != "INTERNAL_ERROR")
    return type(exc).__name__ == "OperationalError"  # SQLAlchemy's and its drivers': the database did not answer


@contextmanager
def transient_store_errors_as_one_line(command: str) -> Iterator[None]:
    """Raise a store error in the block that may pass when tried again (`transient_store_error`: a database that is
    locked or down, a server that does not answer) as a ServiceUnavailableError telling to run `command` again; any
    other error as it is (one from a store refusing what was asked is a bug, and its traceback is wanted)."""
    try:
        yield
    except DemoireError:
        raise
    except Exception as exc:
        if not transient_store_error(exc):
            raise
        raise ServiceUnavailableError(f"the MLflow store did not answer ({type(exc).__name__}: "
                                      f"{first_line(str(exc))}); run `{command}` again to finish") from None


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """Version behind an alias, or None when the model or the alias does not exist."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def version_numbers(client: MlflowClient, name: str) -> list[str]:
    """Version numbers of a registered model, ascending."""
    return sorted((str(v.version) for v in client.search_model_versions(f"name='{name}'")), key=int)


def _no_such_model(client: MlflowClient, name: str, uri: str) -> ModelNotFoundError:
    """The error for a model name nobody registered, listing the names that are."""
    names = [m.name for m in client.search_registered_models() if not is_lock_name(m.name)]
    return ModelNotFoundError(f"no registered model {name!r} ({uri}); registered models: {', '.join(names) or 'none'}")


def resolve_alias(name: str, alias: str) -> str:
    """Version number behind `models:/name@alias`, with an error listing the models or aliases that exist."""
    client = MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        pass
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException:
        raise _no_such_model(client, name, f"models:/{name}@{alias}") from None
    existing = ", ".join(f"{a} (v{v})" for a, v in sorted(aliases.items())) or "none"
    raise ModelNotFoundError(f"no model version at models:/{name}@{alias}; aliases of {name}: {existing}")


def resolve_version(name: str, version: str) -> str:
    """The version number `models:/name/version` names (`latest`: the newest), with an error listing the models
    or versions that exist."""
    client = MlflowClient()
    uri = f"models:/{name}/{version}"
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise _no_such_model(client, name, uri) from None
    numbers = version_numbers(client, name)
    if version == "latest" and numbers:
        return numbers[-1]
    if version not in numbers:
        raise ModelNotFoundError(f"no model version {uri}; versions of {name}: {', '.join(numbers) or 'none'} "
                                 f"(or an alias: models:/{name}@champion)")
    return version


LOCK_SUFFIX = ".registry-lock"


def is_lock_name(name: str) -> bool:
    """Whether a registered model name is a registry lock (pipeline.registry.transaction), not a model."""
    return LOCK_SUFFIX in name
