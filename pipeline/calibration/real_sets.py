"""Read the real photos a calibration fits to: paired folders (any importer layout) or plain folders of moiré photos."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np

from pipeline.calibration.statistics import PairedStatistics, UnpairedStatistics, paired_statistics, unpaired_statistics
from pipeline.data.dataset import Pair
from pipeline.data.paired_folder import decoded_pairs, find_paired_folder
from pipeline.errors import DemoireError, InputDataError
from pipeline.io import read_rgb
from pipeline.sources.folders import image_files


def read_real_photos(
    roots: list[Path], layout: str = "auto", include: str = "*",
) -> tuple[list[Pair], list[np.ndarray], list[tuple[str, str]]]:
    """(pairs, unpaired moiré photos, skipped (name, reason)) under `roots`, names matching `include`.

    A root in a paired layout gives pairs; any other folder gives its images as unpaired photos.
    """
    pairs: list[Pair] = []
    photos: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise InputDataError(f"real photo folder not found: {root}")
        try:
            found = find_paired_folder(root, layout, include=include)
        except InputDataError:  # no paired layout here: a folder of moiré photos, unless a layout was named
            if layout != "auto":
                raise
            found = None
        if found is not None:
            skipped += [(item.name, item.reason) for item in found.skipped]
            pairs += [images for _, images in decoded_pairs(found.pairs, skipped)]
            continue
        for path in image_files(root):
            if not fnmatchcase(path.name, include):
                continue
            try:
                photos.append(read_rgb(path))
            except DemoireError as exc:
                skipped.append((path.name, str(exc)))
    if pairs and photos:
        raise InputDataError("calibrate against paired sets or against unpaired photos, not both at once")
    if not pairs and not photos:
        raise InputDataError(f"no readable real photos matching {include!r} in {', '.join(map(str, roots))}")
    return pairs, photos, skipped


def real_statistics(pairs: list[Pair], photos: list[np.ndarray]) -> PairedStatistics | UnpairedStatistics:
    """The statistics a calibration fits: paired ones when there are pairs, else unpaired ones."""
    return paired_statistics(pairs) if pairs else unpaired_statistics(photos)
