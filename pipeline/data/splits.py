"""Train/val/test splits by source image, so no source's content leaks across splits."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable

import pandas as pd

from pipeline.errors import InputDataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_SPLIT_SALT = b"demoire split\0"


def source_draw(source_id: str) -> float:
    """A number in [0, 1) fixed by the source's id alone: where the source falls among the splits."""
    digest = hashlib.sha256(_SPLIT_SALT + source_id.encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / 2**53  # 53 bits: a float64 holds them exactly, so never 1.0


def split_by_source(source_ids: pd.Series, val_fraction: float, test_fraction: float) -> pd.Series:
    """Assign each row the split of its source; every split gets at least one source.

    A source's split follows from its id alone: test when its draw (source_draw) is below `test_fraction`, val
    up to `test_fraction + val_fraction`, else train; not from the seed or the other sources, so with the same
    fractions, a source added or removed or another seed never puts in the test split a source that another set
    put in train, and a model re-scored on a later test split never meets photos it trained on. The fractions
    hold on average. A split left empty (a handful of sources) takes a source nearest its share that can never
    be in the opposite one: test a val source of the lower half of val's share, train one of the upper half, val
    a test or train source; when there is none, any source, with a warning.
    """
    sources = sorted(source_ids.unique())
    if len(sources) < 3:
        raise InputDataError(
            f"need at least 3 distinct source images to split train/val/test, found {len(sources)}"
        )
    middle = test_fraction + val_fraction / 2
    shares = {"test": (0.0, test_fraction), "val": (test_fraction, test_fraction + val_fraction),
              "train": (test_fraction + val_fraction, 1.0)}
    # the shares that may lend a source to an empty split: test's never goes to train, nor train's to test
    lenders = {"test": [(test_fraction, middle)], "train": [(middle, test_fraction + val_fraction)],
               "val": [(0.0, test_fraction), (test_fraction + val_fraction, 1.0)]}
    draws = {source: source_draw(source) for source in sources}
    labels = {source: next(name for name, (_, high) in shares.items() if draw < high) for source, draw in draws.items()}
    for name in ("test", "train", "val"):  # val last: it may lend its only source to test or train
        counts = Counter(labels.values())
        if counts[name]:
            continue
        low, high = shares[name]
        candidates = [source for source in sources if (counts[labels[source]] > 1 or labels[source] == "val")
                      and any(lo <= draws[source] < hi for lo, hi in lenders[name])]
        leak_free = bool(candidates)
        if not leak_free:  # a few sources only: any whose split keeps another
            candidates = [source for source in sources if counts[labels[source]] > 1]
        chosen = min(candidates, key=lambda source: max(low - draws[source], draws[source] - high))
        if not leak_free:
            log.warning("no source of the %d fell in or near the %s split's share (preprocess.test_fraction %g, "
                        "val_fraction %g): it takes %s, which other sources may move back; add sources to keep "
                        "each source's split whatever the set", len(sources), name, test_fraction, val_fraction,
                        chosen)
        labels[chosen] = name
    return source_ids.map(labels)


def in_train_share(source_ids: Iterable[str], val_fraction: float, test_fraction: float) -> list[str]:
    """The sources (sorted) in train's own share with these fractions: in train whatever the other sources (only a
    split that had to borrow, of a handful of sources, takes one elsewhere)."""
    return sorted(source for source in set(source_ids) if source_draw(source) >= test_fraction + val_fraction)
