"""Stage `train`: fit the demoiré model on the train split; checkpoint and log history every epoch."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows._entry import run_stage
from pipeline.config import Params
from pipeline.models import build_model, count_parameters, model_spec
from pipeline.training.device import resolve_device
from pipeline.training.stage import run_training


@task(name="fit-model", timeout_seconds=48 * 3600)  # a hung run is stopped; its checkpoint resumes it
def fit_task(params: Params, data: Path, pairs_index: Path, out: Path, history: Path) -> list[dict]:
    """Train (in this process, or across train.processes DDP processes) and return the epoch history."""
    run_training(params, data, pairs_index, out, history)
    return pd.read_csv(history).to_dict("records")


@flow(name="train")
def train_flow(params: Params, data: Path, pairs_index: Path, out: Path, history: Path) -> list[dict]:
    """Fit the model and publish a summary artifact."""
    rows = fit_task(params, data, pairs_index, out, history)
    cfg = params.train
    spec = model_spec(cfg.model, cfg.channels, cfg.depth, cfg.correction, cfg.correction_width)
    last = rows[-1]
    create_markdown_artifact(
        key="train-summary",
        markdown=(f"# Training\n\nModel `{spec.name}` ({spec.channels} channels, depth {spec.depth}; "
                  f"{count_parameters(build_model(spec)):,} parameters), {len(rows)} of {cfg.epochs} epochs on "
                  f"device `{resolve_device(cfg.device)}` × {cfg.processes} process(es).\n\n"
                  f"Last epoch: train loss {last['train_loss']:.5f}, val loss {last['val_loss']:.5f}, "
                  f"val PSNR {last['val_psnr']:.2f} dB; {sum(r['seconds'] for r in rows):.0f} s in all.\n"),
    )
    return rows


def main() -> None:
    """`python -m flows.train --data data/synthesize --pairs … --out data/train --history …`."""

    def run(params: Params, args: argparse.Namespace) -> None:
        resolve_device(params.train.device)  # fail before loading data when CUDA is absent
        train_flow(params, args.data, args.pairs, args.out, args.history)

    run_stage(__doc__, ["data", "pairs", "out", "history"], run)


if __name__ == "__main__":
    main()
