"""Stage `register`: log the run to MLflow, register a version as `challenger`, gate `champion` on the test split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows import PROJECT_DIR
from flows._entry import run_stage
from pipeline.config import Params, flatten
from pipeline.evaluation.gate import GateRule, load_gate_set, model_dir_scorer
from pipeline.io import read_rgb, write_json
from pipeline.provenance import data_version_tags, git_commit
from pipeline.registry import GATE_SET_TAG, decision_record, log_demoire_model, register_and_gate, use_tracking_store
from pipeline.training.device import resolve_device

# The register stage's run lasts seconds; MLflow logs system metrics only after a full sampling
# interval, so its 10 s default would log none at all.
SYSTEM_METRICS_INTERVAL_S = 0.5


@task(name="log-and-register", retries=2, retry_delay_seconds=[2, 10])
def log_and_register_task(params: Params, model_dir: Path, history: Path, evaluation: dict, files: list[Path],
                          grid: Path, lock: Path, data: Path, pairs: Path) -> dict:
    """One MLflow run with params, metrics, artifacts, provenance and the model; then register and gate."""
    cfg = params.registration
    uri = use_tracking_store(PROJECT_DIR, cfg.experiment)
    gate = load_gate_set(pairs, data)
    tags = {GATE_SET_TAG: gate.digest, **data_version_tags(lock, data, pairs)}
    commit = git_commit(PROJECT_DIR)
    if commit:
        tags["git_commit"] = commit
    mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
    with mlflow.start_run(log_system_metrics=True, tags=tags) as run:
        mlflow.log_params(flatten(params))
        for row in pd.read_csv(history).itertuples():
            mlflow.log_metrics({"train_loss": row.train_loss, "val_loss": row.val_loss, "val_psnr": row.val_psnr}, step=row.epoch)
        test_metrics = {f"test_{k}": float(v) for k, v in evaluation.items()}
        mlflow.log_metrics(test_metrics)
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
        mlflow.log_image(read_rgb(grid), artifact_file="images/before_after.png")
        if lock.is_file():  # the upstream stages' entries; this stage's own entry is written after it ends
            mlflow.log_artifact(str(lock), artifact_path="dvc")
        info = log_demoire_model(model_dir, params.infer)
    rescore = model_dir_scorer(gate, resolve_device(params.evaluate.device))
    rule = GateRule(cfg.promotion_margin_db, cfg.ssim_tolerance)
    version, decision = register_and_gate(MlflowClient(), cfg.model_name, info.model_uri, run.info.run_id,
                                          test_metrics, tags, rule, rescore)
    return decision_record(version, decision, cfg.model_name, run.info.run_id, uri)


@flow(name="register")
def register_flow(params: Params, model_dir: Path, history: Path, metrics: Path, per_image: Path, grid: Path,
                  out: Path, lock: Path, data: Path, pairs: Path) -> dict:
    """Register this pipeline run's model and write the decision to `out`."""
    evaluation = json.loads(metrics.read_text())
    record = log_and_register_task(params, model_dir, history, evaluation, [metrics, per_image, grid, history],
                                   grid, lock, data, pairs)
    write_json(out, record)
    verdict = "promoted to `champion`" if record["promote"] else "kept as `challenger`"
    create_markdown_artifact(
        key="register-summary",
        markdown=f"# Registration\n\n`{record['model_name']}` v{record['version']} {verdict}: {record['reason']}.\n",
    )
    return record


def main() -> None:
    """`python -m flows.register --model data/train --history … --metrics … --per-image … --grid … --out …
    --lock dvc.lock --data data/synthesize --pairs data/preprocess/pairs.parquet`."""

    def run(params: Params, args: argparse.Namespace) -> None:
        register_flow(params, args.model, args.history, args.metrics, args.per_image, args.grid, args.out,
                      args.lock, args.data, args.pairs)

    run_stage(__doc__, ["model", "history", "metrics", "per-image", "grid", "out", "lock", "data", "pairs"], run)


if __name__ == "__main__":
    main()
