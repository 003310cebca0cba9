"""Manifests (pandas → parquet) of pairs, and validation that each pair is usable."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import DemoireError, InputDataError
from pipeline.io import atomic_path, read_rgb

log = logging.getLogger(__name__)

SCORED_MIN_SIDE = 11  # val and test pairs are scored with SSIM, whose Gaussian window is 11×11


def write_manifest(records: list[dict], path: Path) -> pd.DataFrame:
    """Write records sorted by pair_id as parquet, atomically; return the frame."""
    frame = pd.DataFrame.from_records(records).sort_values("pair_id").reset_index(drop=True)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return frame


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest, with a clear error when it is missing."""
    if not Path(path).is_file():
        raise InputDataError(f"manifest not found: {path} (run the stage that writes it first)")
    return pd.read_parquet(path)


def read_pair(moire_path: Path, clean_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Both images of a pair as RGB uint8; InputDataError if either is unreadable or sizes differ."""
    moire, clean = read_rgb(moire_path), read_rgb(clean_path)
    if moire.shape != clean.shape:
        raise InputDataError(
            f"sizes differ: moire {moire.shape[1]}x{moire.shape[0]}, clean {clean.shape[1]}x{clean.shape[0]}")
    return moire, clean


def check_pair(moire_path: Path, clean_path: Path, min_side: int = 0, needed_by: str = "") -> str | None:
    """Why this pair is unusable (unreadable, sizes differ, a side under `min_side`, which `needed_by` needs),
    or None if it is fine."""
    try:
        moire, _ = read_pair(moire_path, clean_path)
    except DemoireError as exc:
        return str(exc)
    height, width = moire.shape[:2]
    if min(height, width) < min_side:
        return f"{width}x{height} is smaller than {needed_by}"
    return None


def validate_pairs(manifest: pd.DataFrame, root: Path, train_patch: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a manifest into usable pairs and rejected ones (with a `reason` column).

    Pairs of the train split (a `split` column) must be at least `train_patch` pixels a side, the others
    (scored) at least SSIM's window.
    """
    splits = manifest["split"] if "split" in manifest else pd.Series("", index=manifest.index)
    train_needs = f"train.patch_size {train_patch}, the patches training cuts from it"
    scored_needs = f"{SCORED_MIN_SIDE}x{SCORED_MIN_SIDE}, the SSIM window val and test pairs are scored with"
    reasons = [
        check_pair(Path(root) / row.moire_path, Path(root) / row.clean_path,
                   *((train_patch, train_needs) if split == "train" else (SCORED_MIN_SIDE, scored_needs)))
        for row, split in zip(manifest.itertuples(), splits)
    ]
    bad = np.array([r is not None for r in reasons], dtype=bool)
    rejected = manifest.loc[bad, ["pair_id", "moire_path", "clean_path"]].assign(
        reason=[r for r in reasons if r is not None]
    )
    for row in rejected.itertuples():  # the file, not only the id: an imported pair is found by its path
        log.warning("rejected pair %s (%s): %s", row.pair_id, row.moire_path, row.reason)
    return manifest.loc[~bad].reset_index(drop=True), rejected.reset_index(drop=True)
