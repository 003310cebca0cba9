"""Paired folders: `moire/` and `clean/` with matching file names."""

from __future__ import annotations

from pathlib import Path

from pipeline.data.dataset import Pair
from pipeline.errors import DemoireError, InputDataError
from pipeline.data.manifest import read_pair
from pipeline.sources.folders import IMAGE_SUFFIXES


def read_paired_folder(root: Path) -> tuple[list[str], list[Pair], list[tuple[str, str]]]:
    """(names, pairs, skipped (name, reason)) for every file name present in both folders."""
    moire_dir, clean_dir = Path(root) / "moire", Path(root) / "clean"
    if not moire_dir.is_dir() or not clean_dir.is_dir():
        raise InputDataError(f"{root} must contain moire/ and clean/ folders with matching file names")
    names = sorted(p.name for p in moire_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    kept, pairs, skipped = [], [], []
    for name in names:
        if not (clean_dir / name).is_file():
            skipped.append((name, "no clean image of the same name"))
            continue
        try:
            pairs.append(read_pair(moire_dir / name, clean_dir / name))
        except DemoireError as exc:
            skipped.append((name, str(exc)))
            continue
        kept.append(name)
    if not pairs:
        raise InputDataError(f"no usable pairs in {root}")
    return kept, pairs, skipped
