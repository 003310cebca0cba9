"""Torch datasets over (moiré, clean) pairs, in memory or read from disk as they are used."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pipeline.io import read_rgb

if TYPE_CHECKING:  # only an annotation here; importing albumentations costs stages that never augment ~0.5 s
    import albumentations as A

Pair = tuple[np.ndarray, np.ndarray]


class StoredPairs(Sequence[Pair]):
    """(moiré, clean) pairs stored as image files, decoded each time one is indexed.

    Holds only paths, so a split larger than memory trains as well, and a DataLoader's spawned workers
    receive paths (not pixels) and decode in parallel. A slice is again a StoredPairs.
    """

    def __init__(self, paths: list[tuple[Path, Path]], kept: dict[tuple[Path, Path], Pair] | None = None):
        self.paths = paths
        self.kept = kept  # decoded pairs kept after their first use (keep_decoded), shared with slices

    def keep_decoded(self) -> StoredPairs:
        """The same pairs, each decoded once and then kept in memory: for splits that fit, trained in one process."""
        return StoredPairs(self.paths, {} if self.kept is None else self.kept)

    def decoded_bytes(self) -> int:
        """Memory the decoded split would take, from its first pair's size (pairs of a split share one size)."""
        if not self.paths:
            return 0
        moire, clean = read_rgb(self.paths[0][0]), read_rgb(self.paths[0][1])
        return (moire.nbytes + clean.nbytes) * len(self.paths)

    @classmethod
    def listed_in(cls, frame: pd.DataFrame, root: Path) -> StoredPairs:
        """The pairs a manifest frame lists (paths relative to `root`)."""
        root = Path(root)
        return cls([(root / r.moire_path, root / r.clean_path) for r in frame.itertuples()])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int | slice) -> Pair | StoredPairs:  # type: ignore[override]
        if isinstance(index, slice):
            return StoredPairs(self.paths[index], self.kept)
        paths = self.paths[index]
        if self.kept is not None and paths in self.kept:
            return self.kept[paths]
        pair = read_rgb(paths[0]), read_rgb(paths[1])
        if self.kept is not None:
            self.kept[paths] = pair
        return pair

    def missing(self) -> list[Path]:
        """Listed files that are not there."""
        return [path for pair in self.paths for path in pair if not path.is_file()]

    def digest(self) -> str:
        """Digest of every file's bytes, in order (reading is several times faster than decoding)."""
        digest = hashlib.sha256()
        for pair in self.paths:
            for path in pair:
                with open(path, "rb") as file:
                    digest.update(hashlib.file_digest(file, "sha256").digest())
        return digest.hexdigest()


def load_pairs(frame: pd.DataFrame, root: Path) -> list[Pair]:
    """Read every (moiré, clean) pair listed in `frame` (paths relative to `root`) into memory."""
    return list(StoredPairs.listed_in(frame, root))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 → 3xHxW float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """3xHxW float in [0, 1] → HxWx3 uint8 (rounded, clipped)."""
    array = tensor.detach().float().clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0)
    return array.cpu().numpy()


class PairDataset(Dataset):
    """(moiré, clean) tensors, optionally through a paired albumentations transform."""

    def __init__(self, pairs: Sequence[Pair], transform: A.Compose | None = None):
        self.pairs = pairs
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        moire, clean = self.pairs[index]
        if self.transform is not None:
            out = self.transform(image=moire, clean=clean)
            moire, clean = out["image"], out["clean"]
        return to_tensor(moire), to_tensor(clean)
