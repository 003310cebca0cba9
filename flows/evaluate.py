"""Stage `evaluate`: PSNR / SSIM / MSE on the test split for the model and the identity baseline."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows._entry import run_stage
from pipeline.config import Params
from pipeline.data.dataset import load_pairs, to_image, to_tensor
from pipeline.evaluation.evaluate import METRICS, evaluate_pairs, summarize
from pipeline.evaluation.grid import before_after_grid
from pipeline.inference import restore_tensor
from pipeline.io import atomic_path, write_json, write_png
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


@flow(name="evaluate")
def evaluate_flow(params: Params, model_dir: Path, data: Path, pairs_index: Path, out: Path, metrics: Path, grid: Path) -> dict:
    """Write per-image CSV, the metrics JSON and the before/after grid."""
    per_image, grid_rows = score_task(params, model_dir, data, pairs_index)
    with atomic_path(out) as tmp:
        per_image.to_csv(tmp, index=False, float_format="%.6f")
    summary = summarize(per_image)
    write_json(metrics, summary)
    write_png(grid, before_after_grid(grid_rows))
    table = "".join(
        f"| {m} | {summary[m]:.4f} | {summary['identity_' + m]:.4f} |\n" for m in METRICS
    )
    create_markdown_artifact(
        key="evaluate-summary",
        markdown=(f"# Evaluation on {summary['count']} test images\n\n| metric | model | identity |\n"
                  f"|---|---|---|\n{table}\nPSNR gain over identity: {summary['psnr_gain_over_identity']:.2f} dB\n"),
    )
    create_table_artifact(key="evaluate-per-image", table=per_image.round(5).to_dict(orient="records"))
    return summary


def main() -> None:
    """`python -m flows.evaluate --model data/train --data … --pairs … --out … --metrics … --grid …`."""

    def run(params: Params, args: argparse.Namespace) -> None:
        resolve_device(params.evaluate.device)
        evaluate_flow(params, args.model, args.data, args.pairs, args.out, args.metrics, args.grid)

    run_stage(__doc__, ["model", "data", "pairs", "out", "metrics", "grid"], run)


if __name__ == "__main__":
    main()
