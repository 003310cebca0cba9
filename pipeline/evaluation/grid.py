"""Labelled image grids: before/after rows (moiré | restored | clean) and sample galleries."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

CELL = 256
GridRow = tuple[np.ndarray, np.ndarray, np.ndarray]  # (moiré, restored, clean)


def grid_cell(image: np.ndarray, cell: int = CELL) -> np.ndarray:
    """An image as its grid cell: resized to cell×cell (nearest); a cell is its own cell, so thumbnails can be kept."""
    return np.asarray(Image.fromarray(image).resize((cell, cell), Image.Resampling.NEAREST))


def before_after_grid(rows: list[GridRow], cell: int = CELL) -> np.ndarray:
    """Stack (moiré, restored, clean) triples into one labelled RGB image, each cell resized to `cell`."""
    return labelled_grid(rows, ("moire input", "restored", "clean target"), cell)


def labelled_grid(rows: list[tuple[np.ndarray, ...]], labels: tuple[str, ...], cell: int = CELL) -> np.ndarray:
    """One RGB image: a header of column labels, then each row's images resized to `cell` (nearest)."""
    header = 20
    grid = Image.new("RGB", (len(labels) * cell, header + len(rows) * cell), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for col, label in enumerate(labels):
        draw.text((col * cell + 6, 4), label, fill=(0, 0, 0))
    for r, triple in enumerate(rows):
        for c, image in enumerate(triple):
            grid.paste(Image.fromarray(grid_cell(image, cell)), (c * cell, header + r * cell))
    return np.asarray(grid)
