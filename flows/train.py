"""Stage `train`: fit the demoiré CNN on the train split; checkpoint and log history every epoch."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows._entry import run_stage
from pipeline.config import Params
from pipeline.data.dataset import load_pairs
from pipeline.io import atomic_path
from pipeline.models import ModelSpec, build_model, count_parameters, save_model
from pipeline.training.device import resolve_device
from pipeline.training.loop import train_model


@task(name="load-split", retries=2, retry_delay_seconds=2)
def load_split_task(pairs_index: Path, data: Path, split: str):
    """Read one split's images into memory."""
    frame = pd.read_parquet(pairs_index)
    return load_pairs(frame[frame.split == split], data)


@task(name="fit-model")
def fit_task(params: Params, train_pairs, val_pairs, out: Path, history_path: Path) -> tuple[list[dict], int]:
    """Train and write the model (history CSV rewritten atomically each epoch); return history, parameter count."""
    cfg = params.train
    device = resolve_device(cfg.device)
    spec = ModelSpec(name=cfg.model, channels=cfg.channels, depth=cfg.depth)
    model = build_model(spec, seed=params.seed)
    rows: list[dict] = []

    def record(stats) -> None:
        rows.append(asdict(stats))
        with atomic_path(history_path) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.6f")

    train_model(model, train_pairs, val_pairs, cfg, params.seed, device, out / "checkpoint.pt", record)
    save_model(model.cpu(), spec, out)
    return rows, count_parameters(model)


@flow(name="train")
def train_flow(params: Params, data: Path, pairs_index: Path, out: Path, history: Path) -> list[dict]:
    """Load the train and val splits, fit the model, publish a summary artifact."""
    train_pairs = load_split_task(pairs_index, data, "train")
    val_pairs = load_split_task(pairs_index, data, "val")
    rows, n_params = fit_task(params, train_pairs, val_pairs, out, history)
    cfg = params.train
    last = rows[-1]
    create_markdown_artifact(
        key="train-summary",
        markdown=(f"# Training\n\nModel `{cfg.model}` ({n_params:,} parameters) on "
                  f"{len(train_pairs)} pairs, {cfg.epochs} epochs, device `{resolve_device(cfg.device)}`.\n\n"
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
