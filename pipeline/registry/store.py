"""The tracking store: which MLflow store a project uses, a client on it, and reading aliases."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.errors import ModelNotFoundError


def default_tracking_uri(project_dir: Path) -> str:
    """MLFLOW_TRACKING_URI when set, else an SQLite store inside the project."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(project_dir).resolve() / 'mlflow.db'}"


def use_tracking_store(project_dir: Path, experiment: str) -> str:
    """Point MLflow at the store and experiment; local stores keep artifacts in mlartifacts/."""
    explicit = "MLFLOW_TRACKING_URI" in os.environ  # read first: mlflow.set_tracking_uri exports it
    uri = default_tracking_uri(project_dir)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None and not explicit:
        artifacts = (Path(project_dir).resolve() / "mlartifacts").as_uri()
        mlflow.create_experiment(experiment, artifact_location=artifacts)
    mlflow.set_experiment(experiment)
    return uri


def connect(project_dir: Path) -> MlflowClient:
    """A client on the project's store (MLFLOW_TRACKING_URI, else mlflow.db); a missing SQLite file is an error."""
    uri = default_tracking_uri(project_dir)
    store = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if store is not None and not store.is_file():  # MLflow would silently create an empty store here
        raise ModelNotFoundError(f"no MLflow store at {store}; `dvc repro` creates it (or set MLFLOW_TRACKING_URI)")
    mlflow.set_tracking_uri(uri)
    return MlflowClient()



def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """Version behind an alias, or None when the model or the alias does not exist."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None



def _versions(client: MlflowClient, name: str) -> list[str]:
    """Version numbers of a registered model, ascending."""
    return sorted((str(v.version) for v in client.search_model_versions(f"name='{name}'")), key=int)


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
        names = [m.name for m in client.search_registered_models()]
        raise ModelNotFoundError(
            f"no registered model {name!r} (models:/{name}@{alias}); registered models: {', '.join(names) or 'none'}"
        ) from None
    existing = ", ".join(f"{a} (v{v})" for a, v in sorted(aliases.items())) or "none"
    raise ModelNotFoundError(f"no model version at models:/{name}@{alias}; aliases of {name}: {existing}")


