"""The pairs index the preprocess stage writes and training reads: every usable pair with its split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.config import Params
from pipeline.data.imported import INDEX_COLUMNS, ImportedPairs, import_dataset_pairs, next_pair_id
from pipeline.data.manifest import read_manifest, validate_pairs
from pipeline.data.splits import SPLITS, split_by_source
from pipeline.errors import InputDataError
from pipeline.io import atomic_path


@dataclass(frozen=True)
class PairsIndex:
    """The index and what was left out of it."""

    pairs: pd.DataFrame  # INDEX_COLUMNS
    rejected: pd.DataFrame  # synthetic pairs that failed validation, with `reason`
    imported: ImportedPairs

    def summary(self) -> dict:
        """Pairs and source images per split, and the counts of what was left out."""
        counts = self.pairs["split"].value_counts()
        return {
            "pairs": {split: int(counts.get(split, 0)) for split in SPLITS},
            "sources": {split: int(self.pairs.loc[self.pairs.split == split, "source_id"].nunique())
                        for split in SPLITS},
            "rejected_pairs": int(len(self.rejected) + len(self.imported.rejected)),
            "imported_pairs": int(len(self.imported.usable)),
            "unpaired_files": len(self.imported.unpaired),
        }

    def write(self, path: Path) -> None:
        """Write the index (not the left-out pairs) to `path` as parquet, atomically."""
        with atomic_path(path) as tmp:
            self.pairs.to_parquet(tmp, index=False)


def index_pairs(params: Params, synthetic: tuple[pd.DataFrame, pd.DataFrame] | None,
                imported: ImportedPairs) -> PairsIndex:
    """The synthetic pairs (usable, rejected; None when preprocess.synthetic is off) split by source image,
    then the imported real pairs, whose datasets name their split."""
    cfg = params.preprocess
    if synthetic is None:
        usable, rejected = pd.DataFrame(columns=INDEX_COLUMNS), pd.DataFrame(columns=["reason"])
    else:
        usable, rejected = synthetic
        sources = usable["source_id"].nunique()
        if sources < 3:  # said with the params that decide it (check-params catches the plainest cases earlier)
            raise InputDataError(
                f"the {len(usable)} usable synthetic pairs ({len(rejected)} rejected) come from {sources} source "
                f"image(s); splitting them into train, val and test by source needs 3 or more: raise "
                f"synthesize.n_pairs ({params.synthesize.n_pairs}) or add sources (synthesize.sources)")
        split = split_by_source(usable["source_id"], cfg.val_fraction, cfg.test_fraction)
        usable = usable.assign(split=split)
    return PairsIndex(pd.concat([usable[INDEX_COLUMNS], imported.usable], ignore_index=True), rejected, imported)


def build_pairs_index(params: Params, data: Path) -> PairsIndex:
    """The preprocess stage's index of a synthetic set `data` (and of preprocess.datasets), in one call."""
    manifest = read_manifest(Path(data) / "manifest.parquet")
    # Imported datasets first: a wrong dataset path fails before any synthetic image is decoded.
    imported = import_dataset_pairs(params.preprocess.datasets, next_pair_id(manifest), params.train.patch_size)
    synthetic = validate_pairs(manifest, Path(data)) if params.preprocess.synthetic else None
    return index_pairs(params, synthetic, imported)
