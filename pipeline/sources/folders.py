"""User folders of clean images: every decodable image is a source, the rest are reported."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import DemoireError, InputDataError
from pipeline.io import NOT_UTF8_NAME, is_utf8_name, read_rgb

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".heic", ".heif", ".avif"}


def image_files(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted."""
    return find_images(folder)[0]


def find_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """Image files under `folder`, recursively, sorted; and the folders under it that could not be listed
    (pathlib's rglob passes over those without a word)."""
    images: list[Path] = []
    unlisted: list[Path] = []
    for root, _, names in os.walk(folder, onerror=lambda exc: unlisted.append(Path(exc.filename))):
        found = (Path(root) / name for name in names if Path(name).suffix.lower() in IMAGE_SUFFIXES)
        # a link to nothing is listed too: reading it fails and it is skipped with its reason, not passed over
        images += [path for path in found if path.is_file() or path.is_symlink()]
    return sorted(images), sorted(unlisted)


def scan_folder(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files under `folder` (sorted) split into readable ones and (path, reason) failures."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputDataError(f"source folder does not exist: {folder} (fix synthesize.sources.folders)")
    files, unlisted = find_images(folder)
    usable: list[Path] = []
    failed: list[tuple[Path, str]] = [(path, "folder cannot be listed (permission denied?)") for path in unlisted]
    for path in files:
        if not is_utf8_name(str(path)):
            failed.append((path, NOT_UTF8_NAME))
            continue
        try:
            image = read_rgb(path)
        except DemoireError as exc:
            failed.append((path, str(exc)))
            continue
        if min(image.shape[:2]) < 16:
            failed.append((path, f"image is {image.shape[1]}x{image.shape[0]}, smaller than 16 px"))
            continue
        usable.append(path)
    return usable, failed
