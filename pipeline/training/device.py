"""Pick the compute device: `auto` takes CUDA when present; asking for absent CUDA is an error."""

from __future__ import annotations

import torch

from pipeline.errors import ParamsError


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda if available else cpu; 'cuda' without a GPU → ParamsError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if name not in ("cpu", "cuda"):
        raise ParamsError(f"device = {name!r}: choose one of auto, cpu, cuda")
    return torch.device(name)
