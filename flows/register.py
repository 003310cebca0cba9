"""Stage `register`: log the run to MLflow, register a version as `challenger`, gate `champion` on the real sets
(when evaluate.real_sets lists any) or the test split."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows import EXPERIMENT_NAME, PROJECT_DIR, PROJECT_ROOT
from flows._entry import run_stage
from flows.run_logs import unless_user_error
from pipeline.config import Params, flatten
from pipeline.evaluation.gate import REAL, GateRule, gate_pairs, gate_set_hash, local_gate, scored_as
from pipeline.evaluation.real_sets import check_unchanged_since_scored
from pipeline.evaluation.run_report import read_json_input, registration_markdown
from pipeline.faults import kill_point
from pipeline.io import read_rgb, write_json
from pipeline.provenance import data_version_tags, git_commit, git_dirty
from pipeline.registry import (GATE_SET_TAG, champion_trained_on, decision_record, flat_metrics, log_demoire_model,
                               use_tracking_store)
from pipeline.registry.transaction import MODEL_URI_TAG, register_run_once, registration_key
from pipeline.training.device import resolve_device
from pipeline.training.telemetry import TRAINING_RUN_TAG, linked_training_run

log = logging.getLogger(__name__)

# The register stage's run lasts seconds; MLflow logs system metrics only after a full sampling
# interval, so its 10 s default would log none at all.
SYSTEM_METRICS_INTERVAL_S = 0.5


@task(name="log-and-register", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=unless_user_error)
def log_and_register_task(params: Params, model_dir: Path, evaluation: dict, files: list[Path],
                          grid: Path, lock: Path, data: Path, pairs: Path, real_per_image: Path | None = None) -> dict:
    """One MLflow run with params, metrics, artifacts, provenance and the model; then register and gate.

    The training curves are not logged again: the train stage streamed them live into its own run
    (pipeline.training.telemetry), and this run is that run's child, tagged `training_run_id`, as is the version.

    Idempotent (pipeline.registry.transaction): a retry, or a rerun after the stage was killed, finishes
    the registration of these inputs instead of adding a version; concurrent pipelines take turns.
    """
    cfg = params.registration
    uri = use_tracking_store(PROJECT_ROOT, cfg.experiment)
    gate = local_gate(params, data, pairs, PROJECT_ROOT, resolve_device(params.evaluate.device))
    tags = data_version_tags(lock, data, pairs)
    if gate.kind is REAL:
        check_unchanged_since_scored(evaluation, gate.digest, gate.set_digests)
        # the test split's hash is recorded too, so a later synthetic gate finds this version's test_* scores
        tags |= {GATE_SET_TAG: scored_as(gate_set_hash(gate_pairs(pairs), data), params.infer),
                 REAL.set_tag: gate.digest}
    else:
        tags[GATE_SET_TAG] = gate.digest
        caution = champion_trained_on(MlflowClient(), cfg.model_name, gate_pairs(pairs)["source_id"])
        if caution:  # said, not refused: the user changed the fractions, and may mean to
            log.warning(caution)
    commit = git_commit(PROJECT_DIR)
    if commit:
        tags["git_commit"] = commit
        dirty = git_dirty(PROJECT_DIR)  # the commit alone does not name what ran after an edit (the run's params do)
        if dirty is not None:
            tags["git_dirty"] = str(dirty).lower()
    if EXPERIMENT_NAME:
        tags["dvc_experiment"] = EXPERIMENT_NAME
    client = MlflowClient()
    training_run = linked_training_run(client, model_dir)
    if training_run is not None:
        tags[TRAINING_RUN_TAG] = training_run
    metrics = flat_metrics(evaluation)
    flat_params = flatten(params)

    logged: list[str] = []  # the run this call logged; none when an earlier run of the same inputs registered

    def log_run(run_tags: dict[str, str]) -> tuple[str, str]:
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
        # a child of the training run: `mlflow ui` shows the registration under the curves it streamed
        parent = {"mlflow.parentRunId": training_run} if training_run is not None else {}
        with mlflow.start_run(run_name=f"register-{EXPERIMENT_NAME or 'workspace'}", log_system_metrics=True,
                              tags={**tags, **parent, **run_tags}) as run:
            kill_point("register.run_started")
            mlflow.log_params(flat_params)
            mlflow.log_metrics(metrics)
            for path in files:
                mlflow.log_artifact(str(path), artifact_path="evaluation")
            if real_per_image is not None and any(Path(real_per_image).glob("*.csv")):
                mlflow.log_artifacts(str(real_per_image), artifact_path="evaluation/real")
            mlflow.log_image(read_rgb(grid), artifact_file="images/before_after.png")
            if lock.is_file():  # the upstream stages' entries; this stage's own entry is written after it ends
                mlflow.log_artifact(str(lock), artifact_path="dvc")
            info = log_demoire_model(model_dir, params.infer)
            mlflow.set_tag(MODEL_URI_TAG, info.model_uri)  # the model is complete: a rerun may register it
            kill_point("register.model_logged")
        logged.append(run.info.run_id)
        return run.info.run_id, info.model_uri

    rule = GateRule(cfg.promotion_margin_db, cfg.ssim_tolerance, cfg.require_gain_over_input)
    experiment_id = mlflow.get_experiment_by_name(cfg.experiment).experiment_id
    key = registration_key(model_dir, evaluation, flat_params)
    version, run_id, decision = register_run_once(client, cfg.model_name, experiment_id, key, log_run,
                                                  {**metrics, **tags}, rule, gate.rescore, gate.kind)
    if training_run is not None:  # and back: the training run names the version its model became
        client.set_tag(training_run, "registered_version", f"{cfg.model_name}/{version}")
    record = decision_record(version, decision, cfg.model_name, run_id, uri, EXPERIMENT_NAME)
    if not logged:  # the same model and scores as an earlier registration (training is deterministic): its decision
        first = client.get_model_version(cfg.model_name, version).tags.get("dvc_experiment")
        record["registered_earlier"] = {"run_id": run_id, "dvc_experiment": first}
        log.info("%s v%s was registered earlier (%s, run %s) for the same model and scores; its decision stands: %s",
                 cfg.model_name, version, f"experiment {first}" if first else "outside an experiment", run_id,
                 decision.reason)
    return record


@flow(name="register")
def register_flow(params: Params, model_dir: Path, history: Path, metrics: Path, per_image: Path, grid: Path,
                  out: Path, lock: Path, data: Path, pairs: Path, real_per_image: Path | None = None) -> dict:
    """Register this pipeline run's model and write the decision to `out`."""
    evaluation = read_json_input(metrics, "dvc repro evaluate")
    record = log_and_register_task(params, model_dir, evaluation, [metrics, per_image, grid, history],
                                   grid, lock, data, pairs, real_per_image)
    kill_point("register.decided")
    write_json(out, record)
    create_markdown_artifact(key="register-summary", markdown=registration_markdown(record))
    return record


def main() -> None:
    """`python -m flows.register --model data/train --history … --metrics … --per-image … --real-per-image …
    --grid … --out … --lock dvc.lock --data data/synthesize --pairs data/preprocess/pairs.parquet`."""

    def run(params: Params, args: argparse.Namespace) -> None:
        register_flow(params, args.model, args.history, args.metrics, args.per_image, args.grid, args.out,
                      args.lock, args.data, args.pairs, args.real_per_image)

    run_stage(__doc__, ["model", "history", "metrics", "per-image", "real-per-image", "grid", "out", "lock", "data",
                        "pairs"], run)


if __name__ == "__main__":
    main()
