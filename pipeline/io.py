"""Atomic file and folder writes, and image reading that reports failures instead of crashing."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from pipeline.errors import InputDataError

# mkstemp/mkdtemp create owner-only entries; outputs get the permissions a plain open() would give.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE, DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK

# Decompression bombs are a real risk with user folders; PIL raises on anything above this.
Image.MAX_IMAGE_PIXELS = 200_000_000


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp file beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temp folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, DIR_MODE)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def json_ready(data: Any) -> Any:
    """`data` with every NaN or infinite float replaced by None: JSON has no such numbers, and readers
    (DVC, jq, browsers) reject Python's `NaN` / `Infinity` (an identical pair's PSNR is infinite)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: json_ready(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_ready(value) for value in data]
    return data


def json_text(data: Any, **options: Any) -> str:
    """Strict JSON of `data`: non-finite floats written as null (json_ready)."""
    return json.dumps(json_ready(data), allow_nan=False, **options)


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented, strict JSON (non-finite floats as null), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(data, indent=2, sort_keys=True) + "\n")


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an RGB uint8 array as PNG, atomically and byte-reproducibly."""
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", optimize=False, compress_level=6)


def read_rgb(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """Read any image file as an RGB uint8 array, converting grayscale, palette, alpha and 16-bit.

    With `max_pixels`, an image whose header declares more pixels is refused before it is decoded.
    """
    try:
        # PIL only warns between MAX_IMAGE_PIXELS and twice that, and a warning lets the bomb decode.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if max_pixels is not None and width * height > max_pixels:
                    raise InputDataError(f"image {path} is {width}x{height} = {width * height:,} pixels, "
                                         f"over the limit of {max_pixels:,} (infer.max_pixels)")
                im.load()
                return to_rgb_uint8(im)
    except FileNotFoundError as exc:
        raise InputDataError(f"image not found: {path}") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(declared[1]):,} pixels" if declared else "too many pixels"
        raise InputDataError(f"image {path} is {size}, over the decompression-bomb limit of "
                             f"{Image.MAX_IMAGE_PIXELS:,}") from None
    except (OSError, ValueError) as exc:
        raise InputDataError(f"cannot read image {path}: {exc}") from exc


def to_rgb_uint8(im: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to an HxWx3 uint8 array (alpha composited on white)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        gray = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(canvas, rgba).convert("RGB"))
    return np.array(im.convert("RGB"))  # a writable copy: torch warns on read-only arrays
