"""Atomic file and folder writes, and image reading that reports failures instead of crashing."""

from __future__ import annotations

import ctypes
import errno
import glob
import json
import math
import os
import re
import shutil
import socket
import tempfile
import unicodedata
from contextlib import contextmanager
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np
import psutil
from filelock import FileLock, Timeout
from PIL import Image

from pipeline.errors import InputDataError
from pipeline.faults import kill_point


# mkstemp/mkdtemp create owner-only entries; outputs get the permissions a plain open() would give.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE, DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK

# Decompression bombs are a real risk with user folders; PIL raises on anything above this.
Image.MAX_IMAGE_PIXELS = 200_000_000


class OutputExistsError(InputDataError):
    """An output file exists and may not be replaced (no --overwrite), perhaps written a moment ago by another run."""


def _temp_prefix(name: str) -> str:
    """Temp names say which process made them (`.NAME.HOST.PID-xxxx.tmp`), so a later run can clean a killed one's."""
    return f".{name}.{socket.gethostname()}.{os.getpid()}-"


def remove_stale_temps(folder: Path, name: str) -> list[Path]:
    """Remove temp files and folders beside `folder/name` left by processes of this host that are gone (killed)."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.{re.escape(socket.gethostname())}\.(\d+)-[^/]*\.tmp$")
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match and not psutil.pid_exists(int(match[1])):
            shutil.rmtree(entry.path, ignore_errors=True) if entry.is_dir() else Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def temp_beside(path: Path, label: str) -> Path:
    """A temp name beside `path` that `remove_stale_temps` removes once this process is gone."""
    return path.parent / f"{_temp_prefix(path.name)}{label}.tmp"


RENAME_EXCHANGE, AT_FDCWD = 2, -100  # renameat2(2): swap two names in one step; paths relative to the cwd


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step (Linux's renameat2); False where the system or filesystem cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library without it
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def replace_dir(new: Path, path: Path) -> None:
    """Put folder `new` in place of folder `path`, whole; `new`'s name then holds nothing.

    A kill at any moment leaves at `path` the old folder or the new one, never part of either: an existing
    `path` is swapped with `new` in one step, then removed (where the system cannot swap, it is renamed
    aside first: between the two renames, `path` is missing and the old folder lies beside it).
    """
    if not path.exists():
        os.replace(new, path)
        return
    if not path.is_dir():  # a file would be swapped away, and its removal then fail unnoticed
        raise InputDataError(f"{path} is a file, not a folder; name a folder")
    if not _exchange(new, path):
        aside = temp_beside(path, "old")
        os.replace(path, aside)
        os.replace(new, path)
        new = aside
    shutil.rmtree(new, ignore_errors=True)  # the old folder


def _publish_new(tmp: Path, path: Path) -> None:
    """Rename `tmp` to `path` only if `path` does not exist, atomically (a hard link fails on an existing name)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExistsError(f"{path} exists (use --overwrite to replace it)") from None
    except OSError:  # a filesystem without hard links: reserve the name exclusively, then replace it
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
        except FileExistsError:
            raise OutputExistsError(f"{path} exists (use --overwrite to replace it)") from None
        os.replace(tmp, path)


@contextmanager
def atomic_path(path: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp file beside `path`; rename it into place only if the block succeeds.

    `overwrite=False`: an existing `path` (even one another process wrote meanwhile) is never replaced;
    OutputExistsError instead.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        kill_point(f"before:{path.name}")
        if overwrite:
            os.replace(tmp_path, path)
        else:
            _publish_new(tmp_path, path)
        kill_point(f"after:{path.name}")
    finally:
        tmp_path.unlink(missing_ok=True)


def partial_beside(path: Path, digest: str) -> Path:
    """The hidden work of a resumable run writing `path` (`.NAME.partial-<digest[:16]>` beside it): file or folder."""
    return path.parent / f".{path.name}.partial-{digest[:16]}"


def partials_beside(path: Path) -> list[Path]:
    """Every `partial_beside` of `path`, whatever its digest."""
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.partial-*"))


@contextmanager
def sole_writer(path: Path, what: str) -> Iterator[None]:
    """Hold the lock of the runs writing `path` (`.NAME.lock` beside it, left in place, empty); InputDataError at
    once, naming `what` runs, when another run holds it. The kernel releases the lock of a killed run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path.parent / f".{path.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise InputDataError(f"another {what} is writing {path} (it holds {lock.lock_file}): "
                             "wait for it to finish, or stop it") from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def atomic_dir(path: Path, whole: bool = False) -> Iterator[Path]:
    """Yield an empty temp folder beside `path`; its files are moved into `path` only if the block succeeds.

    Each file replaces the one of the same name; nothing else in `path` is touched, so a folder a user
    named keeps whatever it held. `whole=True` is for folders the caller alone owns (a stage's declared
    output): the temp folder then replaces `path` as a whole, stale files of an earlier run included.
    Temp folders of killed runs beside `path` are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, DIR_MODE)
        kill_point(f"before:{path.name}")
        if whole or not path.exists():
            replace_dir(tmp, path)
        else:
            _merge_into(tmp, path)
        kill_point(f"after:{path.name}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _merge_into(staging: Path, target: Path) -> None:
    """Move every file under `staging` to the same place under `target`, replacing only those."""
    for root, _, files in os.walk(staging):
        destination = target / Path(root).relative_to(staging)
        destination.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.replace(Path(root) / name, destination / name)


def check_output_dir(path: Path, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that cannot be one: a file, below a file, or not writable."""
    _check_output(Path(path), option, folder=True)


def check_replaceable_dir(path: Path, overwrite: bool, entries: set[str], option: str = "--out",
                          overwrite_option: str = "--overwrite", kind: str = "a synthetic set",
                          writer: str = "demoire synthesize") -> None:
    """Refuse, before any work, an output folder that cannot be one, an existing one unless `overwrite`, and
    even then one holding anything but `entries` (what `writer` puts there): it is replaced whole."""
    check_output_dir(path, option)
    if path.exists() and not overwrite:
        raise InputDataError(f"{path} exists; choose another {option} or pass {overwrite_option}")
    foreign = sorted(p.name for p in path.iterdir() if p.name not in entries) if path.is_dir() else []
    if foreign:
        raise InputDataError(f"{path} holds more than {kind} ({', '.join(foreign[:3])}); "
                             f"{overwrite_option} replaces only folders {writer} wrote")


def check_output_file(path: Path, option: str = "--out") -> None:
    """Refuse, before any work, an output file that cannot be written: a folder, below a file, or not writable."""
    _check_output(Path(path), option, folder=False)


def _check_output(path: Path, option: str, folder: bool) -> None:
    if path.exists() and folder and not path.is_dir():
        raise InputDataError(f"{option} {path} is a file, not a folder; name a folder")
    if path.is_dir() and not folder:
        raise InputDataError(f"{option} {path} is a folder; name a file")
    existing = path if folder and path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputDataError(f"{option} {path}: {existing} is a file, so nothing can be written below it")
    try:
        fd, probe = tempfile.mkstemp(prefix=_temp_prefix("write-check"), suffix=".tmp", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputDataError(f"{option} {path}: cannot write in {existing} ({exc.strerror})") from None


def check_free_space(path: Path, needed: int, what: str, fix: str) -> None:
    """Refuse work whose output (`needed` bytes, estimated) would not fit on the filesystem of `path`."""
    existing = Path(path)
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise InputDataError(f"{what} needs about {_gigabytes(needed)} in {existing}, which has {_gigabytes(free)} "
                             f"free; {fix}")


def _gigabytes(size: int) -> str:
    return f"{size / 1e9:,.1f} GB" if size >= 1e8 else f"{size / 1e6:,.1f} MB"


def readable_text(text: str) -> str:
    """`text` as valid UTF-8: a file name's bytes that were not (kept by Python as lone surrogates) shown as \\xNN."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate no file name's byte gives
            return text.encode("utf-8", "backslashreplace").decode("utf-8")


NOT_UTF8_NAME = "its file name is not UTF-8 (from an older system or zip?): rename it"


def is_utf8_name(name: str) -> bool:
    """Whether a name read from the disk was valid UTF-8 (Python keeps other bytes as lone surrogates): only such a
    name can go into a CSV, a manifest or JSON as it is."""
    return readable_text(name) == name


def name_matches(name: str, pattern: str) -> bool:
    """Whether a file or pair name matches the glob `pattern`, case-sensitively (a set is the same on every OS)
    and whatever Unicode normal form either is in (a Mac writes names decomposed, a Linux shell composed)."""
    return fnmatchcase(unicodedata.normalize("NFC", name), unicodedata.normalize("NFC", pattern))


def json_ready(data: Any) -> Any:
    """`data` with every NaN or infinite float replaced by None: JSON has no such numbers, and readers
    (DVC, jq, browsers) reject Python's `NaN` / `Infinity` (an identical pair's PSNR is infinite). A file name
    that was not UTF-8 is written with its odd bytes as \\xNN: a lone surrogate is no text a strict reader takes."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, str):
        return readable_text(data)
    if isinstance(data, dict):
        return {json_ready(key): json_ready(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_ready(value) for value in data]
    return data


def json_text(data: Any, **options: Any) -> str:
    """Strict JSON of `data`: non-finite floats written as null (json_ready)."""
    return json.dumps(json_ready(data), allow_nan=False, **options)


def write_torch(path: Path, data: Any) -> None:
    """torch.save `data` to `path` atomically, the same bytes for the same data.

    Saved through a handle, not a path: torch names the archive inside after a path, here the temp
    file's random name, so the same tensors would give other bytes every time.
    """
    import torch  # here, so the rest of this module stays light

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(data, handle)


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented, strict JSON (non-finite floats as null), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(data, indent=2, sort_keys=True) + "\n")


# zlib level of the PNGs that datasets, grids and galleries are written as. A 512² synthetic image took 20 ms
# at level 1 against 75 at 6 (more than its pair's whole simulation) for a file 7 % (moiré) to 13 % (clean)
# larger; the pixels are the same either way. Restored photos (pipeline.photos) keep level 6.
PNG_COMPRESS_LEVEL = 1


def save_png(image: np.ndarray, target: Path | IO[bytes]) -> None:
    """Encode an RGB uint8 array as PNG (PNG_COMPRESS_LEVEL) into a path or a binary file object."""
    Image.fromarray(image).save(target, format="PNG", optimize=False, compress_level=PNG_COMPRESS_LEVEL)


def write_png(path: Path, image: np.ndarray, overwrite: bool = True) -> None:
    """Write an RGB uint8 array as PNG, atomically and byte-reproducibly (never over an existing file unless `overwrite`)."""
    with atomic_path(path, overwrite) as tmp:
        save_png(image, tmp)


def read_rgb(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array, as a viewer shows it (pipeline.photos.read_photo).

    One decoder for everything that reads images (sources, stored pairs, real sets, predict, serving):
    EXIF orientation applied, colour profiles converted to sRGB, 16-bit scaled by bit depth, float
    images read from [0, 1] (others refused), the first frame of a multi-frame file (with a warning),
    files that are not photos refused. With `max_pixels`, an image whose header declares more pixels
    is refused before it is decoded.
    """
    from pipeline.photos import read_photo  # pipeline.photos builds on this module

    return read_photo(Path(path), max_pixels).rgb


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def to_rgb_uint8(im: Image.Image, name: str = "image") -> np.ndarray:
    """Convert a PIL image of any mode to an HxWx3 uint8 array (alpha composited on white).

    Integer images of more than 8 bits are scaled by their bit depth (a dark 16-bit image stays dark);
    float images must hold values in [0, 1]; anything else raises InputDataError.
    """
    if im.mode in SIXTEEN_BIT_MODES or im.mode == "I":
        arr = np.asarray(im).astype(np.float64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise InputDataError(f"{name}: 32-bit integer pixels in [{arr.min():g}, {arr.max():g}]; "
                                 "only 8- and 16-bit images are read")
        # PIL reads 16-bit PNGs and TIFFs as I;16 or I: 16 bits either way, so the scale is 65535.
        gray = np.clip(arr / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if arr.size and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1):
            finite = arr[np.isfinite(arr)]
            low, high = (finite.min(), finite.max()) if finite.size else (np.nan, np.nan)
            raise InputDataError(f"{name}: float pixels in [{low:g}, {high:g}]"
                                 f"{' with NaN or infinite values' if not np.isfinite(arr).all() else ''}; "
                                 "float images are read only with values in [0, 1]")
        gray = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(canvas, rgba).convert("RGB"))
    return np.array(im.convert("RGB"))  # a writable copy: torch warns on read-only arrays
