"""The `demoire` command line: one module per command group, each a thin layer over library functions.

`pipeline.cli.common` holds the app and what the modules share; `python -m pipeline.cli` runs `main`.
"""

from __future__ import annotations

import sys

from pipeline.cli.common import app, err
from pipeline.errors import DemoireError

# Each import registers its commands on `app`; the order is the order of `demoire --help`.
from pipeline.cli import (params, predict, evaluate, synthesize, calibrate, train, registry,  # noqa: F401
                          serve, export, bench)

__all__ = ["app", "main"]


def main() -> None:
    """Entry point that never shows a traceback for user errors."""
    try:
        app()
    except DemoireError as exc:
        err.print(f"error: {exc}")
        sys.exit(2)
