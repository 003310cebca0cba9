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
from pipeline.config import InferParams
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
    """Serves a demoiré model: HxWx3 uint8 RGB of any size in, restored HxWx3 uint8 RGB out, tiled inside.

    Tile settings and device come from the logged model's `model_config` (see `serving_config`),
    so a served model tiles without the project's params.yaml.
    """

    def load_context(self, context) -> None:
        from pipeline.inference import check_tiling  # imported here: runs inside the serving process
        from pipeline.models import load_model
        from pipeline.training.device import resolve_device

        config = {**serving_config(InferParams()), **(context.model_config or {})}
        check_tiling(config["tile_size"], config["tile_overlap"], config["tile_batch"])
        self.tiling = {"tile_size": config["tile_size"], "overlap": config["tile_overlap"],
                       "batch_size": config["tile_batch"]}
        self.device = resolve_device(config["device"])
        self.model, self.spec = load_model(Path(context.artifacts["model_dir"]), self.device)

    def predict(self, context, model_input, params=None) -> np.ndarray:
        from pipeline.inference import restore_image

        image = np.asarray(model_input, dtype=np.uint8)
        return restore_image(self.model, image, self.device, **self.tiling)


# Models from code: MLflow runs this file to build the pyfunc, so loading unpickles nothing.
MODEL_CODE = """from mlflow.models import set_model

from pipeline.registry import DemoirePyfunc

set_model(DemoirePyfunc())
"""


def serving_config(infer: InferParams, device: str = "auto") -> dict:
    """The logged model's `model_config`: tiling from params.yaml's infer section, and the device."""
    return {"tile_size": infer.tile_size, "tile_overlap": infer.tile_overlap, "tile_batch": infer.tile_batch,
            "device": device}


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


def log_demoire_model(model_dir: Path, infer: InferParams | None = None):
    """Log the trained model as a pyfunc under the active run, tiling as `infer` says; return its ModelInfo."""
    example = np.full((32, 32, 3), 128, dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "model"
        bundle.mkdir()
        for name in (WEIGHTS_FILE, SPEC_FILE):
            shutil.copy2(Path(model_dir) / name, bundle / name)
        entry = Path(tmp) / "demoire_model.py"
        entry.write_text(MODEL_CODE)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(entry),
            artifacts={"model_dir": str(bundle)},
            code_paths=[str(Path(pipeline.__file__).parent)],
            signature=IMAGE_SIGNATURE,
            input_example=example,
            model_config=serving_config(infer or InferParams()),
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
