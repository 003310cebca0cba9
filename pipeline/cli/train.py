"""`demoire train`: the train stage outside DVC."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli.common import app, fail
from pipeline.errors import DemoireError


@app.command()
def train(
    params: Path = typer.Option(Path("params.yaml"), help="params file (the train section and seed are used)"),
    data: Path = typer.Option(Path("data/synthesize"), help="folder the pairs index points into"),
    pairs: Path = typer.Option(Path("data/preprocess/pairs.parquet"), help="pairs index with train/val splits"),
    out: Path = typer.Option(Path("data/train"), help="folder for model.pt, model.json and checkpoint.pt"),
    history: Path = typer.Option(Path("data/train/history.csv"), help="per-epoch history CSV"),
) -> None:
    """Train a model as the `train` stage does; resumes from OUT/checkpoint.pt when params and data match.

    With train.processes > 1 it starts that many DDP processes under torchrun.
    """
    import logging

    from pipeline.config import load_params
    from pipeline.training.stage import run_training

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_training(load_params(params), params, data, pairs, out, history)
    except DemoireError as exc:
        fail(exc)
