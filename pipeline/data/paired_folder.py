"""Paired folders: `moire/` and `clean/` with matching file names, or a published dataset's layout.

Pairs are selected by name first and decoded one at a time afterwards, so a set of 4K photos never
has to fit in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from pipeline.config import check_name_glob
from pipeline.data.dataset import Pair
from pipeline.data.manifest import read_pair
from pipeline.errors import DemoireError, InputDataError, ParamsError
from pipeline.io import name_matches
from pipeline.sources.paired_datasets import DatasetPair, PairList, find_pairs


def select_pairs(found: PairList, include: str = "*", limit: int | None = None) -> PairList:
    """The pairs whose names match the glob `include` (`name_matches`), the first `limit` of them by name, and
    the unpaired files among those names."""
    pairs = sorted((pair for pair in found.pairs if name_matches(pair.name, include)), key=lambda pair: pair.name)
    skipped = [item for item in found.skipped if name_matches(item.name, include)]
    if limit is not None and len(pairs) > limit:
        pairs = pairs[:limit]
        # beyond the cut: not in the set (a second file under the last pair's own name is)
        skipped = [item for item in skipped if item.name <= pairs[-1].name]
    return PairList(found.layout, pairs, skipped)


def find_paired_folder(root: Path, layout: str = "auto", split: str | None = None, include: str = "*",
                       limit: int | None = None) -> PairList:
    """The pairs under `root` in `layout` whose names match `include`, the first `limit` by name (see select_pairs);
    InputDataError when none does."""
    try:
        check_name_glob(include)
    except ValueError as exc:
        raise ParamsError(f"include {include!r}: {exc}") from None
    if limit is not None and limit < 1:
        raise ParamsError(f"limit {limit}: must be at least 1 (omit it for every pair)")
    found = find_pairs(root, layout, split)
    selected = select_pairs(found, include, limit)
    if not selected.pairs:
        raise InputDataError(f"no pair in {root} matches include {include!r} ({found.layout} layout, "
                             f"{len(found.pairs)} pairs, {len(found.skipped)} unpaired files)")
    return selected


def decoded_pairs(pairs: list[DatasetPair], skipped: list[tuple[str, str]]) -> Iterator[tuple[str, Pair]]:
    """(name, (moiré, clean)) of each pair, decoded one at a time; an unreadable pair is appended to `skipped`
    as (name, reason) instead."""
    for pair in pairs:
        try:
            images = read_pair(pair.moire_path, pair.clean_path)
        except DemoireError as exc:
            skipped.append((pair.name, str(exc)))
            continue
        yield pair.name, images
