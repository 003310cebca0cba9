"""Resumable per-image scores: a killed evaluation that writes a per-image CSV continues where it stopped.

Scoring 2000 pairs of 1080p takes hours on a CPU. Rows are appended, each flushed as it is scored, to
a hidden partial file beside the CSV whose name carries a digest of everything the scores depend on
(the model's weights, the selected pairs' names, sizes and modification times, the tiling, the
device, the code that decodes, restores and scores, and library versions), as `demoire synthesize`
names its work folder. Rows there keep every digit (the CSV rounds to 6), so a resumed run's summary
is the uninterrupted run's. A run with the same digest keeps the rows already there and scores only
the other pairs; a partial file of any other run is removed. Once every pair is scored, the rows are
written to the CSV as an uninterrupted run writes them (same bytes) and the partial file is removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd
import torch
from filelock import FileLock, Timeout
from torch import nn

from pipeline.errors import InputDataError
from pipeline.evaluation.evaluate import write_per_image
from pipeline.io import atomic_path
from pipeline.provenance import code_digest
from pipeline.sources.paired_datasets import PairList

log = logging.getLogger(__name__)


def model_digest(model: nn.Module) -> str:
    """Digest of a model's weights (its parameters and buffers), or of its file when it is an exported one."""
    digest = hashlib.sha256()
    path = getattr(model, "path", None)  # pipeline.export.ExportedModel: the weights are in the file
    if isinstance(path, Path):
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def pairs_stamp(found: PairList) -> list[list]:
    """Each selected pair's name and its two files' sizes and modification times: a changed file is rescored."""
    stamp = []
    for pair in found.pairs:
        files = []
        for path in (pair.moire_path, pair.clean_path):
            try:
                info = os.stat(path)
                files += [info.st_size, info.st_mtime_ns]
            except OSError:  # unreadable: skipped when scored, and skipped again when resumed
                files += [None, None]
        stamp.append([pair.name, *files])
    return stamp


# The code a per-image row depends on: decoding a pair, restoring it as served, scoring it. A change anywhere
# else (the CLI, the simulator, training) leaves finished rows valid.
SCORING_CODE = ("pipeline/io.py", "pipeline/photos.py", "pipeline/data/manifest.py", "pipeline/data/dataset.py",
                "pipeline/inference.py", "pipeline/models", "pipeline/export.py", "pipeline/evaluation")


def scoring_code_digest() -> str:
    """Digest of SCORING_CODE and of the numpy, Pillow, torch and torchmetrics versions."""
    import numpy
    import PIL
    import torchmetrics

    return code_digest(SCORING_CODE, f"{numpy.__version__} {PIL.__version__} {torch.__version__} "
                                     f"{torchmetrics.__version__}")


def scoring_digest(model: nn.Module, found: PairList, settings: dict) -> str:
    """Digest of what a run's per-image scores depend on: model weights, selected pairs, `settings` (tiling,
    device) and code."""
    text = json.dumps([model_digest(model), pairs_stamp(found), settings, scoring_code_digest()], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()


PARTIAL_FLOAT_FORMAT = None  # pandas' shortest repr: read back, every float is the one written


def partial_csv(csv: Path, digest: str) -> Path:
    """The hidden file a run with this digest appends its rows to, beside `csv`."""
    return csv.parent / f".{csv.name}.partial-{digest[:16]}"


@dataclass
class ResumedRows:
    """Where a run appends its rows, and the rows an earlier run with the same digest already scored."""

    path: Path
    done: pd.DataFrame


def read_complete_rows(path: Path) -> pd.DataFrame:
    """The rows of a partial CSV, its last line dropped (and cut from the file) when a kill left it unfinished."""
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with path.open("r+b") as handle:
            handle.truncate(len(complete))
    if complete.count(b"\n") < 2:  # a header alone (or nothing): no row yet
        path.write_bytes(b"")
        return pd.DataFrame()
    # names stay text ("001.png", "NA"); an empty field is a missing value, as to_csv wrote it
    return pd.read_csv(path, dtype={"image": str}, keep_default_na=False, na_values=[""])


@contextmanager
def resumable_csv(csv: Path, digest: str) -> Iterator[ResumedRows]:
    """Hold `csv`'s lock and yield the partial file to append rows to (in PARTIAL_FLOAT_FORMAT), with the rows
    already in it; on success its rows are written to `csv` as write_per_image writes them and it is removed.
    Partial files of other digests are removed; InputDataError when another run holds the lock."""
    csv = Path(csv)
    csv.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(csv.parent / f".{csv.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise InputDataError(f"another evaluation is writing {csv} (it holds {lock.lock_file}): "
                             "wait for it to finish, or stop it") from None
    try:
        path = partial_csv(csv, digest)
        for stale in csv.parent.glob(f".{csv.name}.partial-*"):
            if stale != path:
                log.info("discarding %s: scored with another model, pairs or settings", stale)
                stale.unlink(missing_ok=True)
        done = read_complete_rows(path) if path.is_file() else pd.DataFrame()
        if len(done):
            log.info("resuming from %s: %d pairs already scored", path, len(done))
        yield ResumedRows(path, done)
        with atomic_path(csv) as tmp:
            write_per_image(read_complete_rows(path), tmp)
        path.unlink()
    finally:
        lock.release()
