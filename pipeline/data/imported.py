"""Pairs from real paired datasets (`preprocess.datasets`) as rows of the pairs index."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.config import ImportedDataset
from pipeline.data.manifest import validate_pairs
from pipeline.errors import InputDataError
from pipeline.sources.paired_datasets import SkippedPair, find_pairs

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["pair_id", "split", "source_id", "moire_path", "clean_path"]


@dataclass(frozen=True)
class ImportedPairs:
    """Usable imported pairs (pairs-index rows), rejected ones (with `reason`) and unpaired files."""

    usable: pd.DataFrame
    rejected: pd.DataFrame
    unpaired: list[SkippedPair]


def import_dataset_pairs(datasets: list[ImportedDataset], first_pair_id: int, train_patch: int = 0) -> ImportedPairs:
    """Find, number and validate the pairs of every dataset; unreadable pairs, and train pairs smaller than
    `train_patch` a side, are rejected, not fatal."""
    frame, unpaired = imported_index(datasets, first_pair_id)
    # Paths are absolute, so the root validate_pairs joins them to is ignored.
    usable, rejected = validate_pairs(frame, Path.cwd(), train_patch)
    return ImportedPairs(usable[INDEX_COLUMNS], rejected, unpaired)


def imported_index(datasets: list[ImportedDataset], first_pair_id: int) -> tuple[pd.DataFrame, list[SkippedPair]]:
    """Pairs-index rows for every pair found in `datasets` (absolute paths), and the unpaired files."""
    records: list[dict] = []
    unpaired: list[SkippedPair] = []
    for i, dataset in enumerate(datasets):
        key = f"preprocess.datasets[{i}]"
        if not Path(dataset.path).is_dir():
            raise InputDataError(f"{key}.path = '{dataset.path}': folder not found (fix the path or remove the entry)")
        try:
            found = find_pairs(dataset.path, dataset.layout, dataset.dataset_split)
        except InputDataError as exc:
            raise InputDataError(f"{key}: {exc}") from None
        # The prefix keeps ids apart from synthetic sources (bundled/, procedural/, folder/) and
        # from a second entry that reads another split of the same dataset.
        prefix = f"dataset{i}-{found.layout}"
        for pair in found.pairs[: dataset.limit]:
            records.append({
                "pair_id": first_pair_id + len(records),
                "split": dataset.split,
                "source_id": f"{prefix}/{pair.name}",
                "moire_path": str(pair.moire_path.resolve()),
                "clean_path": str(pair.clean_path.resolve()),
            })
        unpaired += [SkippedPair(f"{prefix}/{item.name}", item.reason) for item in found.skipped]
    for item in unpaired:
        log.warning("unpaired %s: %s", item.name, item.reason)
    # An empty frame would otherwise have object ids and turn the whole index's ids into objects.
    frame = pd.DataFrame.from_records(records, columns=INDEX_COLUMNS).astype({"pair_id": "int64"})
    return frame, unpaired


def next_pair_id(*frames: pd.DataFrame) -> int:
    """One more than the largest pair_id in `frames` (0 if all are empty), so new ids never collide."""
    return max((int(frame["pair_id"].max()) for frame in frames if len(frame)), default=-1) + 1
