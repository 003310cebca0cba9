"""Prefect flows, one per DVC stage. Importing this package sets Prefect defaults for this project.

Defaults only (a user's environment wins): Prefect state stays inside the project instead of
~/.prefect, the temporary server gets time to start on a slow 2-core machine (it took 10–20 s
here against a 20 s default), the library's `pipeline.*` loggers reach Prefect's run logs, user
errors reach them without a traceback, and neither Prefect's server nor MLflow sends telemetry.
"""

import importlib.util
import os
import sys
from pathlib import Path

# The stages need the `[pipeline]` extra; a base install says so in one line instead of a traceback.
_MISSING = [name for name in ("prefect", "httpx") if importlib.util.find_spec(name) is None]
if _MISSING:
    _message = f"the flows need {_MISSING[0]}, which is not installed: pip install 'demoire[pipeline]'"
    if "-m" in sys.orig_argv[:-1] and sys.orig_argv[sys.orig_argv.index("-m") + 1].startswith("flows."):
        print(f"error: {_message}", file=sys.stderr)
        sys.exit(2)
    raise ModuleNotFoundError(_message, name=_MISSING[0])


def _project_dir() -> Path:
    """This checkout (the folder holding this package and dvc.yaml); for an installed package the current
    folder, so Prefect's state and the MLflow store never land in the environment's site-packages."""
    checkout = Path(__file__).resolve().parents[1]
    return checkout if (checkout / "dvc.yaml").is_file() else Path.cwd().resolve()


PROJECT_DIR = _project_dir()  # this workspace: its code, params.yaml and data/
# The project a run belongs to: where its MLflow store, Prefect state and params' relative paths live.
# `dvc exp run --temp` / `--queue` run the stages in a copy of the workspace under .dvc/tmp/exps/, which
# is deleted afterwards, and set DVC_ROOT to the project they came from (in a plain `dvc repro` it is
# this workspace); the experiment's name is in DVC_EXP_NAME.
PROJECT_ROOT = Path(os.environ.get("DVC_ROOT") or PROJECT_DIR).resolve()
EXPERIMENT_NAME = os.environ.get("DVC_EXP_NAME") or None

os.environ.setdefault("PREFECT_HOME", str(PROJECT_ROOT / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "pipeline")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here, no telemetry
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow's too (it wrote ~/.config/mlflow otherwise)
# MLflow's download bar only where ours is a bar: in a stage's or a flow run's log it is lines of redraws
from pipeline.progress import mlflow_bar_as_ours  # noqa: E402

mlflow_bar_as_ours()

# Every process running a flow (a stage command, a deployment's flow run) logs user errors in one line.
from flows.run_logs import quiet_user_error_tracebacks  # noqa: E402

quiet_user_error_tracebacks()

# dvc.yaml runs these as `python -m flows.<stage>`.
STAGE_MODULES = {"flows.synthesize", "flows.preprocess", "flows.train", "flows.evaluate", "flows.register"}


def _stage_command() -> bool:
    """Whether this process was started as a stage command (this package is imported before the stage module)."""
    argv = sys.orig_argv
    asks_help = any(arg in ("-h", "--help") for arg in argv)  # prints usage and exits: nothing to start
    return "-m" in argv[:-1] and argv[argv.index("-m") + 1] in STAGE_MODULES and not asks_help


if _stage_command() and not os.environ.get("PREFECT_API_URL"):
    # Boot the shared temporary server (flows/stage_server.py) while the stage imports torch & co.:
    # 5-6 s here, on the first stage's critical path otherwise.
    from flows.stage_server import start_early

    start_early(Path(os.environ["PREFECT_HOME"]))
