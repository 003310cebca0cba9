"""Resumable per-image scores: a killed evaluation that writes a per-image CSV continues where it stopped.

Scoring 2000 pairs of 1080p takes hours on a CPU. Rows are appended, each flushed as it is scored, to
a hidden partial file beside the CSV whose name carries a digest of everything the scores depend on
(the model's weights and spec, the selected pairs' names, sizes and modification times, the tiling,
the device, the code that decodes, restores and scores, and library versions), as `demoire
synthesize` names its work folder. Rows there keep every digit (the CSV rounds to 6). A run with the
same digest keeps the rows already there and scores only the other pairs; once every pair is scored,
the rows are written to the CSV in the pairs' order, as an uninterrupted run writes them (same bytes,
same means), and every partial file of the CSV is removed. Partial files of other digests stay until
then, so a run with a mistaken option does not throw away the rows of the one it interrupted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd
import torch
from torch import nn

from pipeline.evaluation.evaluate import write_per_image
from pipeline.io import atomic_path, partial_beside, partials_beside, sole_writer
from pipeline.models import ModelSpec
from pipeline.provenance import code_digest
from pipeline.sources.paired_datasets import PairList

log = logging.getLogger(__name__)

PARTIAL_FLOAT_FORMAT = None  # pandas' shortest repr: read back, every float is the one written
PARTIAL_ENCODING = "utf-8"  # written and read alike, whatever the locale
# pandas 3 parses floats exactly by default and deprecates the option; pandas 2's default parser may be a bit off
EXACT_FLOATS = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}

# The code a per-image row depends on: decoding a pair, restoring it as served (the network, its correction
# and the narrowing's Gaussian), scoring it, and the MKL setting of pipeline/__init__.py. A change anywhere
# else (the CLI, training) leaves rows valid.
SCORING_CODE = ("pipeline/__init__.py", "pipeline/io.py", "pipeline/photos.py", "pipeline/data/manifest.py",
                "pipeline/data/dataset.py", "pipeline/data/paired_folder.py", "pipeline/inference.py",
                "pipeline/models", "pipeline/moire/optics.py", "pipeline/export.py", "pipeline/evaluation")


def model_digest(model: nn.Module, spec: ModelSpec) -> str:
    """Digest of a model: its spec and its weights (persistent parameters and buffers), or the bytes of its file
    when it is an exported one."""
    from pipeline.export import ExportedModel

    digest = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode())
    if isinstance(model, ExportedModel):
        with model.path.open("rb") as handle:
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


def library_versions() -> str:
    """The versions of the libraries that decode, restore and score (onnxruntime's where installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("numpy", "pillow", "torch", "torchmetrics", "onnxruntime"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:  # onnxruntime is optional: only exported ONNX models need it
            found.append(f"{package} absent")
    return " ".join(found)


def scoring_digest(model: nn.Module, spec: ModelSpec, found: PairList, settings: dict) -> str:
    """Digest of what a run's per-image scores depend on: model, selected pairs, `settings` (tiling, device),
    MKL's reproducibility setting, SCORING_CODE and library versions."""
    text = json.dumps([model_digest(model, spec), pairs_stamp(found), settings, os.environ.get("MKL_CBWR"),
                       code_digest(SCORING_CODE, library_versions())], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def partial_csv(csv: Path, digest: str) -> Path:
    """The hidden file a run with this digest appends its rows to, beside `csv`."""
    return partial_beside(csv, digest)


def partial_csvs(csv: Path) -> list[Path]:
    """Every partial file beside `csv`, whatever its digest."""
    return partials_beside(csv)


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
    return pd.read_csv(path, dtype={"image": str}, keep_default_na=False, na_values=[""], encoding=PARTIAL_ENCODING,
                       **EXACT_FLOATS)


def resumed_rows(path: Path) -> pd.DataFrame:
    """The rows already in `path` (none when it is absent); a file that cannot be read back is removed."""
    if not path.is_file():
        return pd.DataFrame()
    try:
        return read_complete_rows(path)
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' ParserError is a ValueError
        log.warning("scoring every pair again: %s cannot be read back (%s)", path, str(exc).splitlines()[0])
        path.unlink()
        return pd.DataFrame()


@dataclass
class ResumedRows:
    """Where a run appends its rows, the rows an earlier run with the same digest already scored, and the CSV
    they end in."""

    path: Path
    done: pd.DataFrame
    csv: Path

    def publish(self, per_image: pd.DataFrame) -> None:
        """Write the whole per-image table (exact, in the pairs' order) to the CSV; remove every partial file."""
        with atomic_path(self.csv) as tmp:
            write_per_image(per_image, tmp)
        for partial in partial_csvs(self.csv):
            partial.unlink(missing_ok=True)


@contextmanager
def resumable_csv(csv: Path, digest: str) -> Iterator[ResumedRows]:
    """Hold `csv`'s lock (pipeline.io.sole_writer; InputDataError when another run holds it) and yield where to
    append rows (in PARTIAL_FLOAT_FORMAT), with the rows a killed run with this digest left; the caller publishes
    the finished table. A partial file still without rows when the run fails is removed."""
    csv = Path(csv)
    with sole_writer(csv, "evaluation"):
        path = partial_csv(csv, digest)
        done = resumed_rows(path)
        if len(done):
            log.info("resuming from %s: %d pairs already scored", path, len(done))
        try:
            yield ResumedRows(path, done, csv)
        except BaseException:
            if path.is_file() and path.stat().st_size == 0:
                path.unlink()
            raise
