"""Read the real photos a calibration fits to: paired folders (any importer layout) or plain folders of moiré photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.calibration.statistics import (
    MIN_SIDE, PairedStatistics, UnpairedStatistics, paired_statistics, unpaired_statistics,
)
from pipeline.data.dataset import Pair
from pipeline.data.paired_folder import decoded_pairs, find_paired_folder
from pipeline.errors import DemoireError, InputDataError
from pipeline.io import name_matches, read_rgb
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
        if root.is_file():
            raise InputDataError(f"--real {root} is a file: name the folder that holds the photos (--include picks "
                                 "some of them)")
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
            pairs += [images for name, images in decoded_pairs(found.pairs, skipped)
                      if _large_enough(name, images[0], skipped)]
            continue
        for path in image_files(root):
            if not name_matches(path.name, include):
                continue
            try:
                photo = read_rgb(path)
            except DemoireError as exc:
                skipped.append((path.name, str(exc)))
                continue
            if _large_enough(path.name, photo, skipped):
                photos.append(photo)
    if pairs and photos:
        raise InputDataError("calibrate against paired sets or against unpaired photos, not both at once")
    if not pairs and not photos:
        why = f": all {len(skipped)} skipped, e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise InputDataError(f"no usable real photos matching {include!r} in {', '.join(map(str, roots))}{why}")
    return pairs, photos, skipped


def _large_enough(name: str, image: np.ndarray, skipped: list[tuple[str, str]]) -> bool:
    """Whether a photo spans the widest octave band and a chroma tile; if not, it is appended to `skipped`."""
    height, width = image.shape[:2]
    if min(height, width) >= MIN_SIDE:
        return True
    # Smaller, its empty bands would count as no power at all and drag the set's means far from any capture.
    skipped.append((name, f"{width}×{height} is smaller than {MIN_SIDE} px a side, the longest period measured"))
    return False


def real_statistics(pairs: list[Pair], photos: list[np.ndarray]) -> PairedStatistics | UnpairedStatistics:
    """The statistics a calibration fits: paired ones when there are pairs, else unpaired ones."""
    return paired_statistics(pairs) if pairs else unpaired_statistics(photos)
