"""Train/val/test splits by source image, so no source's content leaks across splits."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.errors import InputDataError

SPLIT_STREAM = 0x53504C54  # "SPLT"
SPLITS = ("train", "val", "test")


def split_by_source(
    source_ids: pd.Series, val_fraction: float, test_fraction: float, seed: int
) -> pd.Series:
    """Assign each row the split of its source; every split gets at least one source."""
    sources = np.array(sorted(source_ids.unique()))
    if len(sources) < 3:
        raise InputDataError(
            f"need at least 3 distinct source images to split train/val/test, found {len(sources)}"
        )
    order = np.random.default_rng([seed, SPLIT_STREAM]).permutation(len(sources))
    n_test = max(1, round(len(sources) * test_fraction))
    n_val = max(1, round(len(sources) * val_fraction))
    if n_test + n_val >= len(sources):
        raise InputDataError(
            f"{len(sources)} source images leave none to train on after {n_test} for test and {n_val} for val "
            f"(preprocess.test_fraction {test_fraction:g}, val_fraction {val_fraction:g}); lower them or add sources")
    labels = np.full(len(sources), "train", dtype=object)
    labels[order[:n_test]] = "test"
    labels[order[n_test : n_test + n_val]] = "val"
    return source_ids.map(dict(zip(sources, labels)))
