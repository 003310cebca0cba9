"""Torch datasets over in-memory (moiré, clean) pairs."""

from __future__ import annotations

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


def load_pairs(frame: pd.DataFrame, root: Path) -> list[Pair]:
    """Read every (moiré, clean) pair listed in `frame` (paths relative to `root`)."""
    root = Path(root)
    return [(read_rgb(root / r.moire_path), read_rgb(root / r.clean_path)) for r in frame.itertuples()]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 → 3xHxW float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """3xHxW float in [0, 1] → HxWx3 uint8 (rounded, clipped)."""
    array = tensor.detach().float().clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0)
    return array.cpu().numpy()


class PairDataset(Dataset):
    """(moiré, clean) tensors, optionally through a paired albumentations transform."""

    def __init__(self, pairs: list[Pair], transform: A.Compose | None = None):
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
