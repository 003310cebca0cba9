"""Per-epoch checkpoints written atomically, so a killed run never leaves a truncated file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.io import write_torch


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a training state (tensors, numbers, strings, lists and dicts of them)."""
    write_torch(path, state)


def load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The state saved at `path` if it exists and was made for `fingerprint`, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state if state.get("fingerprint") == fingerprint else None
