"""Paired folders: `moire/` and `clean/` with matching file names, or a published dataset's layout."""

from __future__ import annotations

from pathlib import Path

from pipeline.data.dataset import Pair
from pipeline.errors import DemoireError, InputDataError
from pipeline.data.manifest import read_pair
from pipeline.sources.paired_datasets import find_pairs


def read_paired_folder(
    root: Path, layout: str = "auto", split: str | None = None
) -> tuple[list[str], list[Pair], list[tuple[str, str]]]:
    """(names, pairs, skipped (name, reason)) for every pair under `root` in `layout` (see find_pairs)."""
    found = find_pairs(root, layout, split)
    skipped = [(item.name, item.reason) for item in found.skipped]
    kept, pairs = [], []
    for pair in found.pairs:
        try:
            pairs.append(read_pair(pair.moire_path, pair.clean_path))
        except DemoireError as exc:
            skipped.append((pair.name, str(exc)))
            continue
        kept.append(pair.name)
    if not pairs:
        raise InputDataError(f"no usable pairs in {root} ({found.layout} layout, {len(skipped)} skipped)")
    return kept, pairs, skipped
