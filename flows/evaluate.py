"""Stage `evaluate`: the model against the identity baseline on the test split and on every real set."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows import PROJECT_ROOT
from flows._entry import run_stage
from pipeline.config import Params
from pipeline.data.dataset import load_pairs, to_image, to_tensor
from pipeline.evaluation.evaluate import evaluate_pairs, summarize
from pipeline.evaluation.grid import before_after_grid
from pipeline.evaluation.real_sets import (RealSetPairs, RealSetScores, evaluation_metrics, find_real_sets,
                                           score_real_set, served_restorer)
from pipeline.evaluation.summary_tables import metrics_markdown
from pipeline.inference import restore_tensor
from pipeline.io import atomic_dir, atomic_path, write_json, write_png
from pipeline.models import load_model
from pipeline.training.device import resolve_device


@task(name="score-test-split")
def score_task(params: Params, model_dir: Path, data: Path, pairs_index: Path):
    """Per-image metrics of the model and the identity baseline, and the grid's rows."""
    device = resolve_device(params.evaluate.device)
    model, _ = load_model(model_dir, device)
    frame = pd.read_parquet(pairs_index)
    test = frame[frame.split == "test"].sort_values("pair_id")
    pairs = load_pairs(test, data)

    def restore(x):
        return restore_tensor(model, x, device)

    per_image = evaluate_pairs(restore, pairs, [Path(p).name for p in test.moire_path])
    shown = pairs[: params.evaluate.grid_count]
    grid_rows = [(m, to_image(restore(to_tensor(m))), c) for m, c in shown]
    return per_image, grid_rows


@task(name="score-real-set")
def score_real_set_task(params: Params, model_dir: Path, real: RealSetPairs) -> RealSetScores:
    """Per-image metrics on one real set, the model restoring each photo as it is served (tiled, uint8)."""
    device = resolve_device(params.evaluate.device)
    model, _ = load_model(model_dir, device)
    return score_real_set(served_restorer(model, device, params.infer), real)


def write_real_csvs(folder: Path, scores: dict[str, RealSetScores]) -> None:
    """`<name>.csv` of per-image metrics for each real set; the folder is replaced whole (empty without real sets)."""
    with atomic_dir(folder, whole=True) as staging:
        for name, real in scores.items():
            real.per_image.to_csv(staging / f"{name}.csv", index=False, float_format="%.6f")


@flow(name="evaluate")
def evaluate_flow(params: Params, model_dir: Path, data: Path, pairs_index: Path, out: Path, metrics: Path, grid: Path,
                  real_out: Path, project_dir: Path = PROJECT_ROOT) -> dict:
    """Write the per-image CSVs (test split, each real set), the metrics JSON and the before/after grid."""
    real_sets = find_real_sets(params.evaluate.real_sets, project_dir)  # a bad entry stops before any scoring
    per_image, grid_rows = score_task(params, model_dir, data, pairs_index)
    real_scores = {real.name: score_real_set_task(params, model_dir, real) for real in real_sets}
    with atomic_path(out) as tmp:
        per_image.to_csv(tmp, index=False, float_format="%.6f")
    write_real_csvs(real_out, real_scores)
    summary = evaluation_metrics(summarize(per_image), real_scores, real_sets)
    write_json(metrics, summary)
    write_png(grid, before_after_grid(grid_rows))
    skipped = "".join(f"- skipped {name}/{pair}: {reason}\n" for name, real in real_scores.items()
                      for pair, reason in real.skipped)
    create_markdown_artifact(key="evaluate-summary", markdown=metrics_markdown(summary) + skipped)
    create_table_artifact(key="evaluate-per-image", table=per_image.round(5).to_dict(orient="records"))
    return summary


def main() -> None:
    """`python -m flows.evaluate --model data/train --data … --pairs … --out … --metrics … --grid … --real-out …`."""

    def run(params: Params, args: argparse.Namespace) -> None:
        resolve_device(params.evaluate.device)
        evaluate_flow(params, args.model, args.data, args.pairs, args.out, args.metrics, args.grid, args.real_out)

    run_stage(__doc__, ["model", "data", "pairs", "out", "metrics", "grid", "real-out"], run)


if __name__ == "__main__":
    main()
