"""`demoire train`: the train stage outside DVC."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from pipeline.cli.common import (DEFAULT_MODEL, DEFAULT_PARAMS, STAGE_DATA, STAGE_PAIRS, app, err, fail,
                                 params_or_defaults)
from pipeline.errors import DemoireError, InputDataError
from pipeline.lifetime import unwinds_on_sigterm


@app.command()
@unwinds_on_sigterm  # `kill`: the MLflow run ends FAILED, DDP stops
def train(
    params: Path | None = typer.Option(None, help="params file (seed, profile, train, preprocess; synthesize for pairs "
                                                  "rendered on the fly) "
                                                  "[default: ./params.yaml if present, else the defaults]"),
    data: Path = typer.Option(STAGE_DATA, help="synthetic set the pairs index points into "
                                               "(`demoire synthesize --out` writes one)"),
    pairs: Path | None = typer.Option(None, help="pairs index with train/val splits (the preprocess stage's) "
                                                 f"[default: {STAGE_PAIRS} for {STAGE_DATA} if present, else DATA "
                                                 "split here as the preprocess stage does, into OUT/pairs.parquet]"),
    out: Path = typer.Option(Path(DEFAULT_MODEL), help="folder for model.pt, model.json and checkpoint.pt"),
    history: Path | None = typer.Option(None, help="per-epoch history CSV [default: OUT/history.csv]"),
) -> None:
    """Train a model as the `train` stage does; resumes from OUT/checkpoint.pt when params and data match.

    The run is logged to MLflow: MLFLOW_TRACKING_URI, else ./mlflow.db. With train.processes > 1 it starts
    that many DDP processes under torchrun.
    """
    try:
        resolved = params_or_defaults(params)  # before the heavy imports: a bad file is named at once
        pairs = pairs_index_for(resolved, data, pairs, out)
        if params is None and not DEFAULT_PARAMS.is_file():
            err.note(f"no {DEFAULT_PARAMS} here: training with the defaults (`demoire check-params --show` "
                     "prints them; --params names a file)")
    except DemoireError as exc:
        fail(exc)
    import contextlib
    import logging
    import os
    import signal

    from pipeline.io import sole_writer
    from pipeline.lifetime import die_with_parent
    from pipeline.training.distributed import LAUNCHED_BY, world_from_env
    from pipeline.training.stage import run_training

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    world = world_from_env()
    if world.size > 1:  # one of torchrun's processes: it ends with torchrun, even one killed outright
        die_with_parent(int(os.environ.get(LAUNCHED_BY, os.getppid())), signal.SIGTERM)
    # One run at a time into --out: a second would resume the first's checkpoint while it trains and log into its
    # MLflow run. The run that owns the folder holds the lock: this process, or rank 0 of a torchrun started by
    # hand (the ranks this command launches leave it to the launcher). The train stage has DVC's lock.
    owner = world.size == 1 or (world.is_main and LAUNCHED_BY not in os.environ)
    try:
        with sole_writer(out, "demoire train run") if owner else contextlib.nullcontext():
            run_training(resolved, data, pairs, out, history or out / "history.csv")
    except DemoireError as exc:
        fail(exc)


def pairs_index_for(params, data: Path, pairs: Path | None, out: Path) -> Path:
    """The pairs index to train from: the one named, the checkout's for its set, or `data` indexed here into OUT."""
    if pairs is not None:
        if pairs.is_dir():
            raise InputDataError(f"--pairs {pairs} is a folder, not a pairs index (the .parquet file the preprocess "
                                 "stage writes); leave --pairs out to split the synthetic set --data here")
        return pairs
    if data == STAGE_DATA and STAGE_PAIRS.is_file():
        return STAGE_PAIRS
    if not (data / "manifest.parquet").is_file():
        raise InputDataError(f"no pairs to train on: {data} is not a synthetic set (no manifest.parquet); write one "
                             f"with `demoire synthesize --out {shlex.quote(str(data))}` or name it with --data")
    from pipeline.data.pairs_index import build_pairs_index
    from pipeline.io import check_output_dir

    check_output_dir(out)
    index = build_pairs_index(params, data)
    index.write(out / "pairs.parquet")
    summary = index.summary()
    err.note(f"split {data}: {summary['pairs']['train']} train, {summary['pairs']['val']} val, "
             f"{summary['pairs']['test']} test pairs ({summary['rejected_pairs']} rejected) -> {out / 'pairs.parquet'}")
    return out / "pairs.parquet"
