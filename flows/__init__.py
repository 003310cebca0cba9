"""Prefect flows, one per DVC stage. Importing this package sets Prefect defaults for this project.

Defaults only (a user's environment wins): Prefect state stays inside the project instead of
~/.prefect, the temporary server gets time to start on a slow 2-core machine (it took 10–20 s
here against a 20 s default), the library's `pipeline.*` loggers reach Prefect's run logs, and
the server sends no telemetry.
"""

import os
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]

os.environ.setdefault("PREFECT_HOME", str(PROJECT_DIR / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "pipeline")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here, no telemetry
