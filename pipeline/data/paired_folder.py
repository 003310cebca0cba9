"""Paired folders: `moire/` and `clean/` with matching file names, or a published dataset's layout."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from pipeline.data.dataset import Pair
from pipeline.data.manifest import read_pair
from pipeline.errors import DemoireError, InputDataError
from pipeline.sources.paired_datasets import DatasetPair, PairList, find_pairs, select_pairs


def find_paired_folder(root: Path, layout: str = "auto", split: str | None = None, include: str = "*",
                       limit: int | None = None) -> PairList:
    """The pairs under `root` in `layout` whose names match `include`, the first `limit` by name (see select_pairs);
    InputDataError when none does."""
    found = find_pairs(root, layout, split)
    selected = select_pairs(found, include, limit)
    if not selected.pairs:
        raise InputDataError(f"no pair in {root} matches include {include!r} ({found.layout} layout, "
                             f"{len(found.pairs)} pairs, {len(found.skipped)} unpaired files)")
    return selected


def decoded_pairs(pairs: list[DatasetPair], skipped: list[tuple[str, str]]) -> Iterator[tuple[str, Pair]]:
    """(name, (moiré, clean)) of each pair, decoded one at a time (a 4K set need not fit in memory);
    an unreadable pair is appended to `skipped` as (name, reason) instead."""
    for pair in pairs:
        try:
            images = read_pair(pair.moire_path, pair.clean_path)
        except DemoireError as exc:
            skipped.append((pair.name, str(exc)))
            continue
        yield pair.name, images


def read_paired_folder(
    root: Path, layout: str = "auto", split: str | None = None, include: str = "*", limit: int | None = None
) -> tuple[list[str], list[Pair], list[tuple[str, str]]]:
    """(names, pairs, skipped (name, reason)) for the selected pairs under `root` (see find_paired_folder)."""
    found = find_paired_folder(root, layout, split, include, limit)
    skipped = [(item.name, item.reason) for item in found.skipped]
    named = list(decoded_pairs(found.pairs, skipped))
    if not named:
        raise InputDataError(f"no usable pairs in {root} ({found.layout} layout, {len(skipped)} skipped)")
    return [name for name, _ in named], [pair for _, pair in named], skipped
