"""DVC commands as Prefect tasks, for the deployments that run the whole pipeline or one stage.

They call the `dvc` of this interpreter in the project directory (the flow run's working
directory, set by the deployment's pull step), so stage skipping is DVC's own.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import yaml
from prefect import task

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


def run_dvc(*args: str, timeout: float | None = None) -> str:
    """Run `dvc ARGS`, stream nothing, return stdout; a failure raises with the tail of its output."""
    result = subprocess.run(dvc_command(*args), capture_output=True, text=True, timeout=timeout, env=dvc_environment())
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise DemoireError(f"dvc {' '.join(args)} exited with {result.returncode}:\n{tail}")
    return result.stdout


@task(name="dvc-repro", timeout_seconds=REPRO_TIMEOUT_S)
def dvc_repro_task(targets: list[str]) -> str:
    """`dvc repro TARGETS` (all stages when empty): only stages whose deps or params changed run."""
    return run_dvc("repro", *targets, timeout=REPRO_TIMEOUT_S)


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
