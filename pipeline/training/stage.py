"""The training stage as one call, shared by `demoire train` and the Prefect flow.

With `train.processes` > 1 it relaunches itself under torchrun (`demoire train` in each process),
unless it already runs under it; rank 0 writes the history, checkpoint and model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
import yaml

from pipeline.config import Params
from pipeline.data.dataset import StoredPairs
from pipeline.data.on_the_fly import held_out_sources
from pipeline.errors import DemoireError, InputDataError
from pipeline.io import atomic_path
from pipeline.models import build_model, model_spec, save_model
from pipeline.training.device import resolve_device
from pipeline.training.batches import SyntheticBatches, TrainingBatches, stored_pair_batches
from pipeline.training.distributed import (LAUNCHED_BY, World, check_gpu_count, process_group, torchrun_command,
                                           world_from_env)
from pipeline.training.loop import EpochStats, train_model
from pipeline.training.telemetry import live_training_run

log = logging.getLogger(__name__)

LAUNCHER_STOP_S = 60  # torchrun gives its ranks 30 s to end after SIGTERM, then kills them
CHECKPOINT_FILE = "checkpoint.pt"


# What training reads of the preprocess stage's index (a synthesize manifest, say, has no split).
PAIRS_INDEX_COLUMNS = ("split", "moire_path", "clean_path")


def read_pairs_index(pairs_index: Path) -> pd.DataFrame:
    """The preprocess stage's pairs index; InputDataError naming the file where it is missing or is not one."""
    if not Path(pairs_index).is_file():
        raise InputDataError(f"pairs index not found: {pairs_index} "
                             "(the preprocess stage writes it: dvc repro preprocess)")
    try:
        frame = pd.read_parquet(pairs_index)
    except Exception as exc:  # pyarrow's errors for a file that is not parquet vary by what the file is
        raise InputDataError(f"{pairs_index} is not a pairs index: not a parquet file ({type(exc).__name__})") from None
    missing = [column for column in PAIRS_INDEX_COLUMNS if column not in frame.columns]
    if missing:
        raise InputDataError(f"{pairs_index} is not a pairs index: no {', '.join(missing)} column "
                             "(the preprocess stage writes one: data/preprocess/pairs.parquet)")
    return frame


def check_outputs(out: Path, history_path: Path) -> None:
    """Refuse, before any training, output paths that could not be written after it."""
    for path in (out, *Path(out).parents):
        if path.exists() and not path.is_dir():
            raise InputDataError(f"cannot write the model into {out}: {path} is a file")
    if Path(history_path).is_dir():
        raise InputDataError(f"cannot write the history to {history_path}: it is a folder (the history is a CSV file)")
    for path in Path(history_path).parents:
        if path.exists() and not path.is_dir():
            raise InputDataError(f"cannot write the history to {history_path}: {path} is a file")


def load_split(pairs_index: Path, data: Path, split: str) -> StoredPairs:
    """One split's pairs, decoded as they are used; an empty split, or a listed file that is missing, is an error."""
    frame = read_pairs_index(pairs_index)
    pairs = StoredPairs.listed_in(frame[frame.split == split], data)
    if not pairs:
        raise InputDataError(f"{pairs_index} lists no {split} pairs; check the preprocess fractions and datasets")
    missing = pairs.missing()
    if missing:  # found now, not hours into training when a loader reaches it
        raise InputDataError(f"{len(missing)} {split} image(s) listed in {pairs_index} are missing (first: {missing[0]}); "
                             "run the synthesize and preprocess stages again (dvc repro)")
    return pairs


def kept_in_memory_if_it_fits(pairs: StoredPairs, loader_workers: int) -> StoredPairs:
    """`pairs` decoded once and kept when they fit in a quarter of the free memory and one process reads them;
    otherwise decoded on every use. Decoding every epoch cost CPU training at 512² 30 % of its speed
    (benchmarks/data_scale.py: 0.83 against 1.18 img/s); loader workers would each keep a copy."""
    import psutil

    if loader_workers == 0 and pairs.decoded_bytes() <= psutil.virtual_memory().available // 4:
        return pairs.keep_decoded()
    return pairs


def training_batches(params: Params, pairs_index: Path, data: Path, device: torch.device, world: World) -> TrainingBatches:
    """The stored train split, or pairs synthesised on the fly when train.synthetic_pairs_per_epoch is set."""
    cfg = params.train
    if cfg.synthetic_pairs_per_epoch:
        # never a val or test source, now or in a set with more pairs: it would be scored on photos it trained on
        held_out = held_out_sources(params.synthesize, read_pairs_index(pairs_index), params.preprocess.val_fraction,
                                    params.preprocess.test_fraction)
        batches = SyntheticBatches(params.synthesize, cfg.synthetic_pairs_per_epoch, cfg.patch_size, cfg.batch_size,
                                   params.seed, device, world.rank, world.size, held_out)
        if world.is_main:  # what is rendered, which the synthesize section's size and n_pairs do not say
            log.info("rendering %d fresh pairs of %d² an epoch on %s (%d steps of %d pairs × %d processes)",
                     batches.steps_per_epoch * cfg.batch_size * world.size, cfg.patch_size, device.type,
                     batches.steps_per_epoch, cfg.batch_size, world.size)
        return batches
    train = kept_in_memory_if_it_fits(load_split(pairs_index, data, "train"), cfg.num_workers)
    return stored_pair_batches(train, cfg, params.seed, device, world)


def write_history(history: list[EpochStats], path: Path) -> None:
    """The per-epoch history as CSV (a DVC plot), rewritten atomically."""
    with atomic_path(path) as tmp:
        pd.DataFrame([asdict(row) for row in history]).to_csv(tmp, index=False, float_format="%.6f")


def train_in_process(params: Params, data: Path, pairs_index: Path, out: Path, history_path: Path) -> None:
    """Train in this process, one rank of torchrun's world when launched by it."""
    cfg = params.train
    with process_group(resolve_device(cfg.device)) as (world, device):
        batches = training_batches(params, pairs_index, data, device, world)
        val_pairs = kept_in_memory_if_it_fits(load_split(pairs_index, data, "val"), loader_workers=0)
        spec = model_spec(cfg.model, cfg.channels, cfg.depth, cfg.correction, cfg.correction_width)
        model = build_model(spec, seed=params.seed)
        # rank 0 streams the run to MLflow (pipeline.training.telemetry) and ends it FINISHED or FAILED
        with live_training_run(params, out) if world.is_main else contextlib.nullcontext() as telemetry:
            def on_epoch(so_far: list[EpochStats]) -> None:
                write_history(so_far, history_path)
                if telemetry is not None:
                    telemetry.on_epoch(so_far)

            history = train_model(model, batches, val_pairs, cfg, params.seed, device, Path(out) / CHECKPOINT_FILE,
                                  on_epoch, world, on_start=telemetry and telemetry.on_start,
                                  on_step=telemetry and telemetry.on_step)
            if world.is_main:
                write_history(history, history_path)  # also when a resumed run had no epoch left to run
                save_model(model.cpu(), spec, out)


def run_training(params: Params, data: Path, pairs_index: Path, out: Path, history_path: Path) -> None:
    """Train as the params ask: here, or across `train.processes` DDP processes started by torchrun."""
    processes = params.train.processes
    check_outputs(out, history_path)
    # What would fail in every process fails here first, in one line, before torchrun starts them: a pairs index
    # that is not one, CUDA absent or with too few GPUs, a model the params cannot build (a unet of depth 1).
    index = read_pairs_index(pairs_index)
    if resolve_device(params.train.device).type == "cuda":
        check_gpu_count(processes)
    cfg = params.train
    build_model(model_spec(cfg.model, cfg.channels, cfg.depth, cfg.correction, cfg.correction_width))
    world = world_from_env()
    if world.size > 1 and processes != world.size:  # torchrun started by hand: what ran is what gets logged
        log.warning("train.processes = %d, but torchrun started %d processes: training as %d", processes,
                    world.size, world.size)
        params = params.model_copy(update={"train": params.train.model_copy(update={"processes": world.size})})
    if not params.train.synthetic_pairs_per_epoch:
        check_a_pair_per_process(index, pairs_index, params.train.processes)
    if processes == 1 or world.size > 1:
        train_in_process(params, data, pairs_index, out, history_path)
        return
    with tempfile.TemporaryDirectory(prefix="demoire-ddp-") as tmp:
        # The ranks read the params as resolved here (relative folders an experiment's copy reads from the
        # project, the profile's values), not the file they came from.
        resolved = Path(tmp) / "params.yaml"
        resolved.write_text(yaml.safe_dump(params.model_dump(mode="json", by_alias=True), sort_keys=False))
        command = torchrun_command(processes, [
            "pipeline.cli", "train", "--params", str(resolved), "--data", str(data),
            "--pairs", str(pairs_index), "--out", str(out), "--history", str(history_path)])
        log.info("launching %d DDP processes: %s", processes, " ".join(command))
        threads = os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
        code = run_launcher(command, {**os.environ, "OMP_NUM_THREADS": threads, LAUNCHED_BY: str(os.getpid())})
    if code != 0:
        raise DemoireError(launcher_failure(processes, code))


def check_a_pair_per_process(index: pd.DataFrame, pairs_index: Path, processes: int) -> None:
    """Every DDP process needs a train pair of its own: with fewer, a process would have no step to take."""
    train_pairs = int((index["split"] == "train").sum())
    if processes > train_pairs:
        raise InputDataError(f"train.processes = {processes}: more than the {train_pairs} train pairs in "
                             f"{pairs_index}; each process trains on pairs of its own, so use at most {train_pairs}")


def run_launcher(command: list[str], env: dict[str, str]) -> int:
    """Run torchrun to its end and return its exit code; stopped meanwhile (SIGTERM unwinding, Ctrl-C), stop it
    and its processes first, so that none trains on unseen."""
    launcher = subprocess.Popen(command, env=env)
    try:
        return launcher.wait()
    except BaseException as stopped:
        # Ctrl-C reached torchrun too (one process group), which is stopping its ranks: a SIGTERM now would cut
        # their unwinding short. Otherwise torchrun passes SIGTERM on; the ranks end their MLflow run FAILED.
        if not isinstance(stopped, KeyboardInterrupt):
            launcher.terminate()
        try:
            launcher.wait(timeout=LAUNCHER_STOP_S)
        except subprocess.TimeoutExpired:
            launcher.kill()  # the kernel then sends its ranks SIGTERM (pipeline.lifetime.die_with_parent)
            launcher.wait()
        raise


def launcher_failure(processes: int, code: int) -> str:
    """One line for a torchrun that failed: its ranks' error is in the log above, a signal is named."""
    what = f"distributed training ({processes} processes under torchrun)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:  # a real-time signal has no name
            name = f"signal {-code}"
        return f"{what} was stopped by {name} (the out-of-memory killer sends SIGKILL); its processes were stopped with it"
    return f"{what} exited with code {code}; the first error is in the log above"
