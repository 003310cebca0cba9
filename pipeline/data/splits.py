"""Train/val/test splits by source image, so no source's content leaks across splits."""

from __future__ import annotations

import hashlib
from collections import Counter

import pandas as pd

from pipeline.errors import InputDataError

SPLITS = ("train", "val", "test")
_SPLIT_SALT = b"demoire split\0"


def source_draw(source_id: str) -> float:
    """A number in [0, 1) fixed by the source's id alone: where the source falls among the splits."""
    digest = hashlib.sha256(_SPLIT_SALT + source_id.encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / 2**53  # 53 bits: a float64 holds them exactly, so never 1.0


def split_by_source(source_ids: pd.Series, val_fraction: float, test_fraction: float) -> pd.Series:
    """Assign each row the split of its source; every split gets at least one source.

    A source's split follows from its id alone (test below `test_fraction`, val the next `val_fraction`), not from
    the seed or the other sources: a source added or removed, or another seed, moves no other source between
    splits, so a model re-scored on a later test split never meets photos it trained on. The fractions hold on
    average; only a split left empty (a handful of sources) takes the source nearest its share.
    """
    sources = sorted(source_ids.unique())
    if len(sources) < 3:
        raise InputDataError(
            f"need at least 3 distinct source images to split train/val/test, found {len(sources)}"
        )
    bounds = {"test": (0.0, test_fraction), "val": (test_fraction, test_fraction + val_fraction),
              "train": (test_fraction + val_fraction, 1.0)}
    draws = {source: source_draw(source) for source in sources}
    labels = {source: next(name for name, (_, high) in bounds.items() if draw < high) for source, draw in draws.items()}
    for name, (low, high) in bounds.items():
        counts = Counter(labels.values())
        if counts[name] == 0:
            movable = [source for source in sources if counts[labels[source]] > 1]
            labels[min(movable, key=lambda source: max(low - draws[source], draws[source] - high))] = name
    return source_ids.map(labels)
