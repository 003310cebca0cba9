"""DVC commands as Prefect tasks, for the deployments that run the whole pipeline or one stage.

They call the `dvc` of this interpreter in the project directory (the flow run's working
directory, set by the deployment's pull step), so stage skipping is DVC's own.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import psutil
import yaml
from prefect import get_run_logger, task

from pipeline.errors import DemoireError
from pipeline.io import atomic_path

log = logging.getLogger(__name__)

LOCK_FILE = Path("dvc.lock")
REPRO_TIMEOUT_S = 6 * 3600  # a long GPU training fits; a hung one is stopped
TRANSFER_RETRIES = {"retries": 3, "retry_delay_seconds": [10, 60, 300]}  # remotes hiccup; back off


DVC_FILE = Path("dvc.yaml")


def undeclared_folders(stage: str, folders: list[Path], dvc_file: Path = DVC_FILE) -> list[Path]:
    """Those of `folders` no dep of `stage` in `dvc_file` covers (the folder itself or one above it): DVC does not
    see files added there, so neither `dvc repro` nor the scheduled pipeline retrains on them. Deps are read as
    DVC reads them, relative to the file's folder, and also relative to the project (an experiment's copy)."""
    try:
        deps = yaml.safe_load(dvc_file.read_text())["stages"][stage].get("deps") or []
    except (OSError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return []  # no dvc.yaml here (a flow run outside a project) or no such stage: nothing to say
    from flows import PROJECT_ROOT

    roots = {dvc_file.resolve().parent, PROJECT_ROOT}
    declared = [(root / str(dep)).resolve() for dep in deps if isinstance(dep, str) for root in roots]
    return [folder for folder in folders
            if not any(Path(folder).resolve().is_relative_to(dep) for dep in declared)]


def warn_undeclared_folders(stage: str, key: str, folders: list[Path], added: str) -> None:
    """A warning for each of `folders` (params' `key`) that `stage`'s deps do not cover: `added` there later go
    unnoticed by `dvc repro` and the scheduled pipeline."""
    for folder in undeclared_folders(stage, folders):
        log.warning("%s: %s is not among the %s stage's deps in dvc.yaml, so %s added there later go unnoticed by "
                    "`dvc repro` and the scheduled pipeline; list it there (or run `dvc repro -f -s %s` after "
                    "adding some)", key, folder, stage, added, stage)


def dvc_command(*args: str) -> list[str]:
    """`dvc ARGS` run by this interpreter."""
    return [sys.executable, "-m", "dvc", *args]


def dvc_environment() -> dict[str, str]:
    """This process's environment with this interpreter's folder first on PATH, and the flow run calling.

    dvc.yaml's stage commands say `python`, which DVC's shell resolves from PATH: without this a
    worker or script started by the venv's interpreter would run the stages with whatever other
    python comes first there.
    """
    from prefect.runtime import flow_run

    from flows._entry import PIPELINE_RUN_ENV

    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    if flow_run.id:  # the stages' flow runs are tagged with the pipeline run that started them (flows._entry)
        env[PIPELINE_RUN_ENV] = str(flow_run.id)
    return env


def run_dvc(*args: str, timeout: float | None = None, echo: logging.Logger | None = None) -> str:
    """Run `dvc ARGS` and return its output: stdout, or with `echo` stdout and stderr merged, each line also logged
    to `echo` as it comes (the stages' logs and progress included), so a long run shows where it is. A failure
    raises with the tail of its output; past `timeout` it is killed (streamed: with its stages) and
    `subprocess.TimeoutExpired` raised."""
    if echo is None:
        result = subprocess.run(dvc_command(*args), capture_output=True, text=True, timeout=timeout,
                                env=dvc_environment())
        returncode, stdout, output = result.returncode, result.stdout, result.stdout + result.stderr
    else:
        returncode, stdout = _streamed(dvc_command(*args), timeout, echo)
        output = stdout
    if returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise DemoireError(f"dvc {' '.join(args)} exited with {returncode}:\n{tail}")
    return stdout


READ_LIMIT = 64 * 1024  # a longer line (a progress bar redrawn with "\r" only) is logged in parts of this size
SHOWN_LIMIT = 10_000  # characters of one logged line: Prefect's API refuses log records past 1 MB
LEVELS = {"DEBUG": logging.DEBUG, "WARNING": logging.WARNING, "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}


def _streamed(command: list[str], timeout: float | None, echo: logging.Logger) -> tuple[int, str]:
    """Run `command` with stdout and stderr merged, logging each line to `echo` as it comes: (exit code, output)."""
    # The stages' Python would otherwise hold its output in a pipe's 8 KB buffer until it exits.
    env = {**dvc_environment(), "PYTHONUNBUFFERED": "1"}
    lines: list[str] = []
    # Bytes split at "\n" only: text mode would make each redraw of a progress bar ("\r") a line of its own.
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) as process:
        reader = threading.Thread(target=_echo_lines, args=(process.stdout, lines, echo), daemon=True)
        reader.start()
        try:
            returncode = process.wait(timeout=timeout)
        except BaseException:  # our timeout, the task's (Prefect raises its own), a signal: the stages stop too
            _kill_tree(process)
            raise
        finally:
            reader.join(timeout=10)  # the rest of the pipe, unless a process the stages left still holds it
            if reader.is_alive():  # then closing the pipe would wait for that process: leave it to the reader
                process.stdout = None
    return returncode, "".join(lines)


def _kill_tree(process: subprocess.Popen) -> None:
    """Kill `process` and every process it started (DVC's stage commands and theirs), then reap it."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    process.kill()
    for child in descendants:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()


def _echo_lines(stream: IO[bytes], lines: list[str], echo: logging.Logger) -> None:
    """Keep and log each line of `stream` until it closes, at the level the line names (a stage's warnings and
    errors stay warnings and errors)."""
    for raw in iter(lambda: stream.readline(READ_LIMIT), b""):
        line = raw.decode("utf-8", errors="replace")
        lines.append(line)
        shown = line.rstrip().rsplit("\r", 1)[-1][:SHOWN_LIMIT]  # a progress bar redrawn in place: its last state
        if shown.strip():
            echo.log(_level(shown), "%s", shown)


def _level(line: str) -> int:
    """The level a line of output names: Prefect's and the library loggers' `| WARNING |`, DVC's `ERROR: …`."""
    named = re.search(r"\| (DEBUG|WARNING|ERROR|CRITICAL) *\|", line) or re.match(r"(WARNING|ERROR):", line)
    return LEVELS[named.group(1)] if named else logging.INFO


@task(name="dvc-repro", timeout_seconds=REPRO_TIMEOUT_S)
def dvc_repro_task(targets: list[str]) -> str:
    """`dvc repro TARGETS` (all stages when empty): only stages whose deps or params changed run; their output goes to
    the flow run's log as it comes (the worker's terminal and the UI)."""
    return run_dvc("repro", *targets, timeout=REPRO_TIMEOUT_S, echo=get_run_logger())


@task(name="stale-stages", retries=2, retry_delay_seconds=5)
def stale_stages_task() -> list[str]:
    """Stages `dvc status` reports as changed (their own deps, params or outs)."""
    status = json.loads(run_dvc("status", "--json") or "{}")
    return sorted(name for name in status if not name.endswith(".dvc"))


@task(name="dvc-push", **TRANSFER_RETRIES)
def dvc_push_task(targets: list[str]) -> str:
    """Upload the targets' outputs to the DVC remote (where another machine can pull them)."""
    return run_dvc("push", *targets)


@task(name="dvc-pull", **TRANSFER_RETRIES)
def dvc_pull_task(targets: list[str]) -> str:
    """Download and check out the targets' outputs recorded in dvc.lock from the DVC remote."""
    return run_dvc("pull", *targets)


def stage_lock(stage: str) -> dict:
    """This checkout's dvc.lock entry of one stage (hashes of its deps, params and outs)."""
    return yaml.safe_load(LOCK_FILE.read_text())["stages"][stage]


@task(name="adopt-stage-locks")
def adopt_stage_locks_task(entries: dict[str, dict]) -> None:
    """Record stages that ran elsewhere: their dvc.lock entries replace ours, in one atomic write."""
    lock = yaml.safe_load(LOCK_FILE.read_text())
    lock["stages"].update(entries)
    with atomic_path(LOCK_FILE) as tmp:
        tmp.write_text(yaml.safe_dump(lock, sort_keys=False))
