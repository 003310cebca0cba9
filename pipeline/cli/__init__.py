"""The `demoire` command line: one module per command group, each a thin layer over library functions.

`pipeline.cli.common` holds the app and what the modules share; `python -m pipeline.cli` runs `main`.
"""

from __future__ import annotations

import os
import sys

# No usage telemetry from MLflow (it writes an installation id under ~/.config/mlflow), as none from Prefect's
# server; a user's own setting wins.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pipeline.cli.common import app, err  # noqa: E402
from pipeline.errors import DemoireError

# Each import registers its commands on `app`; the order is the order of `demoire --help`.
from pipeline.cli import (params, predict, evaluate, synthesize, calibrate, train, registry,  # noqa: F401
                          serve, export, bench)

__all__ = ["app", "main"]


# Modules of the optional extras (pyproject.toml), by the extra that installs them.
EXTRAS = {"fastapi": "serve", "uvicorn": "serve", "python_multipart": "serve", "onnx": "export",
          "onnxruntime": "export", "dvc": "pipeline", "prefect": "pipeline", "prefect_dask": "pipeline",
          "optuna": "pipeline"}


def main() -> None:
    """Entry point that never shows a traceback for user errors (nor for a missing optional extra)."""
    try:
        app()
    except DemoireError as exc:
        err.print(f"error: {exc}")
        sys.exit(2)
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        err.print(f"error: this command needs {exc.name}, which is not installed: pip install 'demoire[{extra}]'",
                  highlight=False)
        sys.exit(2)
