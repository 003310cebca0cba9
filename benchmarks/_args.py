"""What the benchmark scripts share at their command line: NAME=GLOB groups, outputs checked before any
work, JPEG quality in range, and user errors as one line (exit 2), as `demoire` gives them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from pipeline.errors import DemoireError
from pipeline.io import check_output_file


def name_glob(text: str) -> tuple[str, str]:
    """`--group NAME=GLOB` as (name, glob)."""
    name, sep, glob = text.partition("=")
    if not (sep and name and glob):
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=GLOB, e.g. fhdmi='fhdmi_*'")
    return name, glob


def output_file(text: str) -> Path:
    """An output file that can be written (not a folder, not below a file): refused at once, not after the work."""
    try:
        check_output_file(Path(text), "")
    except DemoireError as exc:
        raise argparse.ArgumentTypeError(str(exc).strip()) from None
    return Path(text)


def jpeg_output(text: str) -> Path:
    """An output file for a gallery, which is written as JPEG whatever else the name says."""
    if Path(text).suffix.lower() not in (".jpg", ".jpeg"):
        raise argparse.ArgumentTypeError(f"{text}: the gallery is a JPEG; name a .jpg file")
    return output_file(text)


def jpeg_quality(text: str) -> int:
    """A JPEG quality, 1–100."""
    quality = int(text)
    if not 1 <= quality <= 100:
        raise argparse.ArgumentTypeError(f"{quality}: a JPEG quality is 1–100")
    return quality


def positive_count(text: str) -> int:
    """A count of at least 1."""
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"{count}: give at least 1")
    return count


def groups_or_all(groups: list[tuple[str, str]]) -> dict[str, str]:
    """The `--group` options given, or one group `all` of every pair."""
    return dict(groups) or {"all": "*"}


def run(main: Callable[[], None]) -> None:
    """Run a script's main; a user error (bad input, a missing folder, an unreadable model) is one line, exit 2."""
    try:
        main()
    except DemoireError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
