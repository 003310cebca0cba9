"""Cost of live MLflow telemetry per training epoch: the quick profile's training with and without it.

    python benchmarks/live_telemetry.py [--epochs 4] [--pairs 336] [--size 128] [--every 50 1]

Trains the quick profile's model and recipe (unet 48 ch, batch 16, 64² patches) on `--pairs` random
128² pairs (the quick profile's train split is ≈ 336 of its 480 pairs) for `--epochs` epochs: once
without hooks, then once per `--every` value streaming to a fresh SQLite store (per-epoch metrics,
the running loss every N steps, system metrics). Prints one JSON object: median epoch seconds of each,
and the seconds spent inside the telemetry hooks per epoch (what the epoch pays, free of machine noise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.bench import machine
from pipeline.config import parse_params
from pipeline.models import build_model, model_spec
from pipeline.training.batches import stored_pair_batches
from pipeline.training.loop import train_model
from pipeline.training.telemetry import live_training_run


def random_pairs(count: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(moiré, clean) uint8 pairs: smooth images plus stripes (the time does not depend on the content)."""
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(count):
        clean = rng.integers(40, 200, (size, size, 3), dtype=np.uint8)
        moire = clean.copy()
        moire[:, ::3] += 30
        pairs.append((moire, clean))
    return pairs


def timed(hook, spent: list[float]):
    """`hook`, adding the seconds each call takes to spent[0]."""
    def call(*args):
        start = time.perf_counter()
        hook(*args)
        spent[0] += time.perf_counter() - start
    return call


def train_once(pairs, epochs: int, every: int | None, folder: Path) -> dict:
    """Median epoch seconds (and hook seconds per epoch) of one training; `every` None: no telemetry."""
    params = parse_params({"profile": "quick", "seed": 0, "train": {"epochs": epochs, "device": "cpu",
                                                                     "log_every_steps": every or 0}})
    cfg = params.train
    model = build_model(model_spec(cfg.model, cfg.channels, cfg.depth), seed=0)
    batches = stored_pair_batches(pairs, cfg, params.seed)
    checkpoint = folder / f"checkpoint-{every}.pt"
    if every is None:
        history = train_model(model, batches, pairs[:8], cfg, 0, torch.device("cpu"), checkpoint)
        return {"median_epoch_s": statistics.median(r.seconds for r in history), "hook_s_per_epoch": 0.0}
    spent = [0.0]
    with live_training_run(params, folder / f"run-{every}") as telemetry:
        history = train_model(model, batches, pairs[:8], cfg, 0, torch.device("cpu"), checkpoint,
                              timed(telemetry.on_epoch, spent), on_start=timed(telemetry.on_start, spent),
                              on_step=timed(telemetry.on_step, spent))
    return {"median_epoch_s": statistics.median(r.seconds for r in history), "hook_s_per_epoch": spent[0] / epochs,
            "steps_per_epoch": batches.steps_per_epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=336)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--every", type=int, nargs="+", default=[50, 1], help="train.log_every_steps values to time")
    args = parser.parse_args()
    pairs = random_pairs(args.pairs, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DVC_ROOT"] = tmp  # a fresh project store, not this checkout's
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        results = {"without": train_once(pairs, args.epochs, None, Path(tmp))}
        for every in args.every:
            results[f"every_{every}_steps"] = train_once(pairs, args.epochs, every, Path(tmp))
    print(json.dumps({"epochs": args.epochs, "pairs": args.pairs, "size": args.size, **results,
                      "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
