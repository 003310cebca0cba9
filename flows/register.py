"""Stage `register`: log the run to MLflow, register a version as `challenger`, gate `champion`."""

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
from pipeline.io import write_json
from pipeline.registry import decision_record, log_demoire_model, register_and_gate, use_tracking_store


@task(name="log-and-register", retries=2, retry_delay_seconds=[2, 10])
def log_and_register_task(params: Params, model_dir: Path, history: Path, evaluation: dict, files: list[Path]) -> dict:
    """One MLflow run with params, metrics, artifacts and the model; then register and gate."""
    cfg = params.registration
    uri = use_tracking_store(PROJECT_DIR, cfg.experiment)
    with mlflow.start_run() as run:
        mlflow.log_params(flatten(params))
        for row in pd.read_csv(history).itertuples():
            mlflow.log_metrics({"train_loss": row.train_loss, "val_loss": row.val_loss, "val_psnr": row.val_psnr}, step=row.epoch)
        test_metrics = {f"test_{k}": float(v) for k, v in evaluation.items()}
        mlflow.log_metrics(test_metrics)
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
        info = log_demoire_model(model_dir, params.infer)
    version, decision = register_and_gate(MlflowClient(), cfg.model_name, info.model_uri, run.info.run_id, test_metrics)
    return decision_record(version, decision, cfg.model_name, run.info.run_id, uri)


@flow(name="register")
def register_flow(params: Params, model_dir: Path, history: Path, metrics: Path, per_image: Path, grid: Path, out: Path) -> dict:
    """Register this pipeline run's model and write the decision to `out`."""
    evaluation = json.loads(metrics.read_text())
    record = log_and_register_task(params, model_dir, history, evaluation, [metrics, per_image, grid, history])
    write_json(out, record)
    verdict = "promoted to `champion`" if record["promote"] else "kept as `challenger`"
    create_markdown_artifact(
        key="register-summary",
        markdown=f"# Registration\n\n`{record['model_name']}` v{record['version']} {verdict}: {record['reason']}.\n",
    )
    return record


def main() -> None:
    """`python -m flows.register --model data/train --history … --metrics … --per-image … --grid …--out …`."""

    def run(params: Params, args: argparse.Namespace) -> None:
        register_flow(params, args.model, args.history, args.metrics, args.per_image, args.grid, args.out)

    run_stage(__doc__, ["model", "history", "metrics", "per-image", "grid", "out"], run)


if __name__ == "__main__":
    main()
