"""MLflow tracking and model registry: log a run, register a version, gate promotion to `champion`.

The only module that talks to MLflow. The logged model is a pyfunc that rebuilds the architecture
from its spec and loads a plain state dict (weights_only), so loading needs no pickled torch module.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import Schema, TensorSpec

import pipeline
from pipeline.config import InferParams
from pipeline.errors import InputDataError, ModelNotFoundError
from pipeline.evaluation.gate import (GATE_KINDS, METRIC_LABELS, SYNTHETIC, GateKind, GateRule, GateScores,
                                     PromotionDecision, decide_promotion)
from pipeline.models import SPEC_FILE, WEIGHTS_FILE

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
GATE_SET_TAG = SYNTHETIC.set_tag  # version tag: hash of the test split its test_* metrics were computed on
GATE_KIND_TAG = "gate.kind"  # version tag: which gate decided, `synthetic` (test split) or `real` (real sets)
CHAMPION_HISTORY_TAG = "champion_history"  # registered-model tag: JSON list of champion versions, oldest first
MAX_HISTORY = 200  # versions kept in the history; MLflow tag values hold at most 5000 characters
Rescore = Callable[[Path], dict[str, float]]  # model folder (model.pt + model.json) → the gate kind's metrics on the gate set
IMAGE_SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, 3))]),
    outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, 3))]),
)


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


def flat_metrics(evaluation: dict) -> dict[str, float]:
    """The evaluate stage's metrics.json as MLflow metric names: `test_<metric>` for the test split,
    `real_<set>_<metric>` per real set and `real_<metric>` for the means over sets; nulls left out."""
    def numbers(prefix: str, mapping: dict) -> dict[str, float]:
        return {f"{prefix}{key}": float(value) for key, value in mapping.items()
                if isinstance(value, (int, float)) and not isinstance(value, bool)}

    flat = numbers("test_", evaluation)
    for name, summary in evaluation.get("real", {}).items():
        flat |= numbers(f"real_{name}_", summary)
    return flat | numbers("real_", evaluation.get("real_mean", {}))


def register_and_gate(
    client: MlflowClient,
    name: str,
    model_uri: str,
    run_id: str,
    metrics: dict[str, float],
    tags: dict[str, str],
    rule: GateRule,
    rescore: Rescore | None = None,
    kind: GateKind = SYNTHETIC,
) -> tuple[str, PromotionDecision]:
    """Register a version as `challenger` tagged with its metrics and `tags`, and gate `champion`.

    `metrics` must hold the gate kind's means (`test_psnr`, … or `real_psnr`, `real_tone_psnr`, …) and
    `tags` its gate set tag (`gate_set` or `real_gate_set`), the hash of the set they were computed on.
    A champion scored on another gate set is re-scored on this one with `rescore` first.
    """
    gate_set = tags[kind.set_tag]
    champion = _alias_version(client, name, CHAMPION)
    # scored before registering: a failed re-score must not leave a version without a decision
    champion_scores = scores_on_gate_set(client, name, champion, gate_set, rescore, kind) if champion else None
    version = str(mlflow.register_model(model_uri, name).version)
    for key, value in {**metrics, **tags}.items():
        client.set_model_version_tag(name, version, key, str(value))
    client.set_registered_model_alias(name, CHALLENGER, version)
    challenger = GateScores.from_means(version, {m: metrics[f"{kind.prefix}_{m}"] for m in kind.metrics}, gate_set, kind)
    decision = decide_promotion(challenger, champion_scores, rule)
    apply_decision(client, name, decision, f"run {run_id}")
    log.info("registered %s v%s: %s", name, version, decision.reason)
    return version, decision


def connect(project_dir: Path) -> MlflowClient:
    """A client on the project's store (MLFLOW_TRACKING_URI, else mlflow.db); a missing SQLite file is an error."""
    uri = default_tracking_uri(project_dir)
    store = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if store is not None and not store.is_file():  # MLflow would silently create an empty store here
        raise ModelNotFoundError(f"no MLflow store at {store}; `dvc repro` creates it (or set MLFLOW_TRACKING_URI)")
    mlflow.set_tracking_uri(uri)
    return MlflowClient()


def compare_challenger(
    client: MlflowClient, name: str, rule: GateRule, local_gate: Callable[[], tuple[str, Rescore]],
    kind: GateKind = SYNTHETIC,
) -> PromotionDecision:
    """Decide on `challenger` vs `champion` on one gate set of `kind`: the one both were scored on, else the
    local one (the test split, or the real sets of params.yaml).

    `local_gate` is only called when the recorded scores are not comparable; it returns the local
    gate set's hash and a function scoring a model folder on it.
    """
    challenger = resolve_alias(name, CHALLENGER)
    champion = _alias_version(client, name, CHAMPION)
    ours = recorded_scores(client, name, challenger, kind)
    theirs = recorded_scores(client, name, champion, kind) if champion else None
    if ours is not None and (champion is None or (theirs is not None and theirs.gate_set == ours.gate_set)):
        return decide_promotion(ours, theirs, rule)
    gate_set, rescore = local_gate()
    ours = scores_on_gate_set(client, name, challenger, gate_set, rescore, kind)
    theirs = scores_on_gate_set(client, name, champion, gate_set, rescore, kind) if champion else None
    return decide_promotion(ours, theirs, rule)


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """Version behind an alias, or None when the model or the alias does not exist."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def recorded_scores(client: MlflowClient, name: str, version: str, kind: GateKind = SYNTHETIC) -> GateScores | None:
    """A version's scores on a gate set of `kind` as tagged at registration; None if it lacks the set or a metric."""
    tags = client.get_model_version(name, version).tags
    try:
        means = {metric: float(tags[f"{kind.prefix}_{metric}"]) for metric in kind.metrics}
    except (KeyError, ValueError):
        return None
    gate_set = tags.get(kind.set_tag)
    return GateScores.from_means(version, means, gate_set, kind) if gate_set else None


def scores_on_gate_set(
    client: MlflowClient, name: str, version: str, gate_set: str, rescore: Rescore | None, kind: GateKind = SYNTHETIC
) -> GateScores:
    """A version's scores on `gate_set`: as recorded when it was scored on it, else re-scored with `rescore`."""
    recorded = recorded_scores(client, name, version, kind)
    if recorded is not None and recorded.gate_set == gate_set:
        return recorded
    if rescore is None:
        needs = "the test split (`dvc repro` writes it)" if kind is SYNTHETIC else "the real sets of evaluate.real_sets"
        raise InputDataError(f"{name} v{version} was scored on another gate set than {gate_set[:12]}; "
                             f"re-scoring it needs {needs}")
    with tempfile.TemporaryDirectory() as tmp:
        scores = rescore(download_model_files(f"models:/{name}/{version}", Path(tmp)))
    log.info("re-scored %s v%s on gate set %s (%s): %s", name, version, gate_set[:12], kind.label, scores)
    return GateScores.from_means(version, scores, gate_set, kind, rescored=True)


def apply_decision(client: MlflowClient, name: str, decision: PromotionDecision, source: str) -> None:
    """Write the comparison and decision on the challenger version; move `champion` if it won."""
    version, champion = decision.challenger.version, decision.champion
    tags = {
        "promotion": "promoted" if decision.promote else "not_promoted",
        "promotion_reason": decision.reason,
        GATE_KIND_TAG: decision.challenger.kind,
        "gate.gate_set": decision.challenger.gate_set,
        "gate.margin_db": decision.rule.margin_db,
        "gate.ssim_tolerance": decision.rule.ssim_tolerance,
        "gate.challenger_rescored": decision.challenger.rescored,
        **{f"gate.challenger_{m}": value for m, value in decision.challenger.means().items()},
    }
    if champion is not None:
        tags |= {"gate.champion_version": champion.version, "gate.champion_rescored": champion.rescored,
                 **{f"gate.champion_{m}": value for m, value in champion.means().items()}}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
    client.update_model_version(name, version, description=comparison_markdown(decision, source))
    if decision.promote:
        move_champion(client, name, version)


def comparison_markdown(decision: PromotionDecision, source: str) -> str:
    """The version description: decision, rule and both models' scores on the gate set."""
    challenger, champion = decision.challenger, decision.champion
    kind = GATE_KINDS[challenger.kind]
    verdict = "promoted to champion" if decision.promote else "not promoted"
    margins = " and ".join(METRIC_LABELS[m] for m in kind.margin_metrics)
    lines = [f"{source}: {verdict}: {decision.reason}", "",
             f"Gate set {challenger.gate_set} ({kind.label}; gate.kind {kind.name}); margin "
             f"{decision.rule.margin_db:g} dB {margins}, SSIM tolerance {decision.rule.ssim_tolerance:g}.", ""]
    if champion is None:
        return "\n".join(lines + [f"v{challenger.version}: " + ", ".join(
            f"{m} {value:.6g}" for m, value in challenger.means().items())])
    lines += [f"| metric | challenger v{challenger.version} | champion v{champion.version} |", "|---|---|---|"]
    lines += [f"| {m} | {value:.6g} | {getattr(champion, m):.6g} |" for m, value in challenger.means().items()]
    rescored = [f"v{s.version}" for s in (challenger, champion) if s.rescored]
    if rescored:
        lines += ["", f"Re-scored on this gate set: {', '.join(rescored)}."]
    return "\n".join(lines)


def champion_history(client: MlflowClient, name: str) -> list[str]:
    """Versions that held `champion`, oldest first, ending with the current one (even if moved by hand)."""
    model = client.get_registered_model(name)
    history = [str(v) for v in json.loads(model.tags.get(CHAMPION_HISTORY_TAG, "[]"))]
    current = _alias_version(client, name, CHAMPION)
    if current is not None and history[-1:] != [current]:
        history.append(current)
    return history


def _write_history(client: MlflowClient, name: str, history: list[str]) -> None:
    """Store the champion history; the oldest entries go first, since tag values are limited to 5000 chars."""
    client.set_registered_model_tag(name, CHAMPION_HISTORY_TAG, json.dumps(history[-MAX_HISTORY:]))


def move_champion(client: MlflowClient, name: str, version: str) -> None:
    """Point `champion` at `version` and append it to the champion history."""
    history = champion_history(client, name)
    client.set_registered_model_alias(name, CHAMPION, version)
    if history[-1:] != [version]:
        _write_history(client, name, history + [version])


def rollback_champion(client: MlflowClient, name: str) -> tuple[str, str]:
    """Move `champion` back to the previous champion; return (demoted, restored) versions."""
    resolve_alias(name, CHAMPION)
    history = champion_history(client, name)
    if len(history) < 2:
        raise ModelNotFoundError(f"{name} has no previous champion to roll back to "
                                 f"(champion history: {', '.join('v' + v for v in history)})")
    demoted, restored = history[-1], history[-2]
    try:
        client.set_registered_model_alias(name, CHAMPION, restored)
    except MlflowException:
        raise ModelNotFoundError(f"previous champion {name} v{restored} no longer exists; "
                                 f"versions: {', '.join(_versions(client, name)) or 'none'}") from None
    _write_history(client, name, history[:-1])
    client.set_model_version_tag(name, demoted, "rolled_back", f"champion moved back to v{restored}")
    return demoted, restored


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


def decision_record(version: str, decision: PromotionDecision, name: str, run_id: str, uri: str) -> dict:
    """The register stage's output: what was registered and what was decided."""
    return {"model_name": name, "version": version, "run_id": run_id, "tracking_uri": uri, **decision.record()}


def load_registered_model(uri: str, device):
    """The torch module behind a `models:/name@alias` (or `models:/name/version`) URI."""
    return load_registered_model_and_spec(uri, device)[0]


def load_registered_model_and_spec(uri: str, device):
    """The torch module behind a `models:/` URI and its architecture spec."""
    from pipeline.models import load_model

    mlflow.set_tracking_uri(default_tracking_uri(Path.cwd()))
    name, _, alias = uri.removeprefix("models:/").partition("@")
    if alias:
        resolve_alias(name, alias)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            files = download_model_files(uri, Path(tmp))
        except MlflowException as exc:
            raise ModelNotFoundError(f"cannot load {uri}: {str(exc).splitlines()[0]}") from None
        return load_model(files, device)


def model_version_info(uri: str) -> dict:
    """Name, version, alias, run and the metrics tagged on the version behind a `models:/name@alias` or
    `models:/name/version` URI (what `demoire serve` answers on GET /model)."""
    mlflow.set_tracking_uri(default_tracking_uri(Path.cwd()))
    client = MlflowClient()
    name, _, alias = uri.removeprefix("models:/").partition("@")
    if alias:
        version = client.get_model_version(name, resolve_alias(name, alias))
    else:
        name, _, number = name.partition("/")
        try:
            version = client.get_model_version(name, number)
        except MlflowException:
            raise ModelNotFoundError(f"no model version {uri}; versions of {name}: "
                                     f"{', '.join(_versions(client, name)) or 'none'}") from None
    metrics = {}
    for key, value in sorted(version.tags.items()):
        if key.startswith(("test_", "real_")):
            try:
                metrics[key] = float(value)
            except ValueError:
                pass
    return {"name": name, "version": str(version.version), "alias": alias or None, "run_id": version.run_id,
            "promotion": version.tags.get("promotion"), "metrics": metrics}


def download_model_files(uri: str, dst: Path) -> Path:
    """Download a logged demoiré pyfunc into `dst`; return the folder holding its model.pt and model.json."""
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(dst)))
    # They are the pyfunc artifact `model_dir`; its MLmodel says where in the model it was stored.
    return local / Model.load(local).flavors["python_function"]["artifacts"]["model_dir"]["path"]
