"""MLflow tracking and model registry: log a run, register a version, gate promotion to `champion`.

The only module that talks to MLflow. The logged model is a pyfunc that rebuilds the architecture
from its spec and loads a plain state dict (weights_only), so loading needs no pickled torch module.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import Schema, TensorSpec

import pipeline
from pipeline.errors import ModelNotFoundError
from pipeline.models import SPEC_FILE, WEIGHTS_FILE

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
GATE_METRIC = "test_psnr"
IMAGE_SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, 3))]),
    outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, 3))]),
)


def default_tracking_uri(project_dir: Path) -> str:
    """MLFLOW_TRACKING_URI when set, else an SQLite store inside the project."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(project_dir).resolve() / 'mlflow.db'}"


def use_tracking_store(project_dir: Path, experiment: str) -> str:
    """Point MLflow at the store and experiment; local stores keep artifacts in mlartifacts/."""
    uri = default_tracking_uri(project_dir)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None and "MLFLOW_TRACKING_URI" not in os.environ:
        artifacts = (Path(project_dir).resolve() / "mlartifacts").as_uri()
        mlflow.create_experiment(experiment, artifact_location=artifacts)
    mlflow.set_experiment(experiment)
    return uri


class DemoirePyfunc(mlflow.pyfunc.PythonModel):
    """Serves a demoiré model: HxWx3 uint8 RGB in, restored HxWx3 uint8 RGB out."""

    def load_context(self, context) -> None:
        from pipeline.models import load_model  # imported here: runs inside the serving process

        self.model, self.spec = load_model(Path(context.artifacts["model_dir"]))

    def predict(self, context, model_input, params=None) -> np.ndarray:
        from pipeline.inference import restore_image

        image = np.asarray(model_input, dtype=np.uint8)
        return restore_image(self.model, image)


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the challenger becomes champion, and why."""

    promote: bool
    reason: str
    champion_version: str | None
    champion_psnr: float | None


def decide_promotion(challenger_psnr: float, champion_version: str | None, champion_psnr: float | None) -> PromotionDecision:
    """Promote when there is no champion or the challenger's test PSNR is strictly higher."""
    if champion_version is None or champion_psnr is None:
        return PromotionDecision(True, "no champion yet", champion_version, champion_psnr)
    if challenger_psnr > champion_psnr:
        reason = f"test PSNR {challenger_psnr:.3f} dB beats champion v{champion_version} ({champion_psnr:.3f} dB)"
        return PromotionDecision(True, reason, champion_version, champion_psnr)
    reason = f"test PSNR {challenger_psnr:.3f} dB does not beat champion v{champion_version} ({champion_psnr:.3f} dB)"
    return PromotionDecision(False, reason, champion_version, champion_psnr)


def current_champion(client: MlflowClient, name: str) -> tuple[str | None, float | None]:
    """(version, test PSNR) of the model's champion, or (None, None) when it has none."""
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None, None
    psnr = version.tags.get(GATE_METRIC)
    return str(version.version), float(psnr) if psnr is not None else None


def log_demoire_model(model_dir: Path):
    """Log the trained model as a pyfunc under the active run; return its ModelInfo."""
    example = np.full((32, 32, 3), 128, dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "model"
        bundle.mkdir()
        for name in (WEIGHTS_FILE, SPEC_FILE):
            shutil.copy2(Path(model_dir) / name, bundle / name)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=DemoirePyfunc(),
            artifacts={"model_dir": str(bundle)},
            code_paths=[str(Path(pipeline.__file__).parent)],
            signature=IMAGE_SIGNATURE,
            input_example=example,
            pip_requirements=["torch==2.13.0", "numpy", "pillow", "pydantic", "pyyaml"],
        )


def register_and_gate(
    client: MlflowClient, name: str, model_uri: str, run_id: str, metrics: dict[str, float]
) -> tuple[str, PromotionDecision]:
    """Register a version as `challenger`, tag it, and move `champion` to it if it wins."""
    champion_version, champion_psnr = current_champion(client, name)
    version = str(mlflow.register_model(model_uri, name).version)
    for key, value in metrics.items():
        client.set_model_version_tag(name, version, key, str(value))
    client.set_registered_model_alias(name, CHALLENGER, version)
    decision = decide_promotion(metrics[GATE_METRIC], champion_version, champion_psnr)
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promotion", "promoted" if decision.promote else "not_promoted")
    client.set_model_version_tag(name, version, "promotion_reason", decision.reason)
    client.update_model_version(name, version, description=f"run {run_id}: {decision.reason}")
    log.info("registered %s v%s: %s", name, version, decision.reason)
    return version, decision


def resolve_alias(name: str, alias: str) -> str:
    """Version number behind `models:/name@alias`, with an error listing what exists."""
    client = MlflowClient()
    try:
        return client.get_model_version_by_alias(name, alias).version
    except MlflowException:
        names = [m.name for m in client.search_registered_models()]
        raise ModelNotFoundError(
            f"no model version at models:/{name}@{alias}; registered models: {', '.join(names) or 'none'}"
        ) from None


def decision_record(version: str, decision: PromotionDecision, name: str, run_id: str, uri: str) -> dict:
    """The register stage's output: what was registered and what was decided."""
    return {"model_name": name, "version": version, "run_id": run_id, "tracking_uri": uri, **asdict(decision)}


def load_registered_model(uri: str, device):
    """The torch module behind a `models:/name@alias` (or `models:/name/version`) URI."""
    from pipeline.models import load_model

    mlflow.set_tracking_uri(default_tracking_uri(Path.cwd()))
    name, _, alias = uri.removeprefix("models:/").partition("@")
    if alias:
        resolve_alias(name, alias)
    try:
        local = mlflow.artifacts.download_artifacts(f"{uri}/artifacts/model_dir")
    except MlflowException as exc:
        raise ModelNotFoundError(f"cannot load {uri}: {str(exc).splitlines()[0]}") from None
    return load_model(Path(local), device)[0]
