"""Stage `evaluate`: the model against the identity baseline on the test split and on every real set."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows import PROJECT_ROOT
from flows._entry import run_stage
from pipeline.config import Params
from pipeline.evaluation.evaluate import PairScores, evaluate_found_pairs, indexed_pairs
from pipeline.evaluation.gate import gate_pairs
from pipeline.evaluation.grid import before_after_grid
from pipeline.evaluation.real_sets import (RealSetPairs, RealSetScores, evaluation_metrics, find_real_sets,
                                           score_real_set, served_restorer)
from pipeline.evaluation.summary_tables import metrics_markdown
from pipeline.io import atomic_dir, atomic_path, write_json, write_png
from pipeline.models import load_model
from pipeline.training.device import resolve_device

log = logging.getLogger(__name__)
REAL_INDEX = "index.json"  # beside the real sets' per-image CSVs: {set name: {csv, pairs, skipped}}


@task(name="score-test-split")
def score_task(params: Params, model_dir: Path, data: Path, pairs_index: Path, csv: Path) -> PairScores:
    """Per-image metrics of the model, restoring each image as it is served (tiled, uint8), and of the identity
    baseline, each row appended to `csv` as it is scored; the first `grid_count` pairs kept for the grid."""
    device = resolve_device(params.evaluate.device)
    model, _ = load_model(model_dir, device)
    found = indexed_pairs(gate_pairs(pairs_index), data)
    scores = evaluate_found_pairs(served_restorer(model, device, params.infer), found, data, csv,
                                  params.evaluate.grid_count, description="scoring the test split")
    for name, reason in scores.skipped:
        log.warning("test split: skipped %s: %s", name, reason)
    return scores


@task(name="score-real-set")
def score_real_set_task(params: Params, model_dir: Path, real: RealSetPairs, csv: Path) -> RealSetScores:
    """Per-image metrics on one real set, the model restoring each photo as it is served (tiled, uint8), each row
    appended to `csv` as it is scored."""
    device = resolve_device(params.evaluate.device)
    model, _ = load_model(model_dir, device)
    return score_real_set(served_restorer(model, device, params.infer), real, csv)


@flow(name="evaluate")
def evaluate_flow(params: Params, model_dir: Path, data: Path, pairs_index: Path, out: Path, metrics: Path, grid: Path,
                  real_out: Path, project_dir: Path = PROJECT_ROOT) -> dict:
    """Write the per-image CSVs (test split, each real set), the metrics JSON and the before/after grid.

    The CSVs grow row by row in temp files beside `out` and in a temp folder beside `real_out` (`<name>.csv` per
    real set, and `index.json` naming them), renamed into place only once every set is scored: a killed run
    leaves no CSV that looks complete."""
    real_sets = find_real_sets(params.evaluate.real_sets, project_dir)  # a bad entry stops before any scoring
    with atomic_path(out) as per_image_csv, atomic_dir(real_out, whole=True) as real_csvs:
        test = score_task(params, model_dir, data, pairs_index, per_image_csv)
        real_scores = {real.name: score_real_set_task(params, model_dir, real, real_csvs / f"{real.name}.csv")
                       for real in real_sets}
        # what the folder holds, also when no real set is configured (DVC warns about an empty output folder)
        write_json(real_csvs / REAL_INDEX, {name: {"csv": f"{name}.csv", "pairs": scores.summary["count"],
                                                   "skipped": len(scores.skipped)}
                                            for name, scores in real_scores.items()})
    summary = evaluation_metrics(test.summary, real_scores, real_sets, params.infer)
    write_json(metrics, summary)
    write_png(grid, before_after_grid(test.shown))
    skipped = [("test", pair, reason) for pair, reason in test.skipped] + [
        (name, pair, reason) for name, real in real_scores.items() for pair, reason in real.skipped]
    create_markdown_artifact(key="evaluate-summary", markdown=metrics_markdown(summary) + "".join(
        f"- skipped {name}/{pair}: {reason}\n" for name, pair, reason in skipped))
    create_table_artifact(key="evaluate-per-image", table=test.per_image.round(5).to_dict(orient="records"))
    return summary


def main() -> None:
    """`python -m flows.evaluate --model data/train --data … --pairs … --out … --metrics … --grid … --real-out …`."""

    def run(params: Params, args: argparse.Namespace) -> None:
        resolve_device(params.evaluate.device)
        evaluate_flow(params, args.model, args.data, args.pairs, args.out, args.metrics, args.grid, args.real_out)

    run_stage(__doc__, ["model", "data", "pairs", "out", "metrics", "grid", "real-out"], run)


if __name__ == "__main__":
    main()
