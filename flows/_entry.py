"""Shared command-line entry for stage flows: validate params first, print user errors as one line."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import yaml

from flows import PROJECT_ROOT
from pipeline.config import Params, check_folders, load_params
from pipeline.errors import DemoireError
from pipeline.lifetime import end_with_starter, exit_on_sigterm


def run_stage(
    description: str, path_options: list[str], run: Callable[[Params, argparse.Namespace], object]
) -> None:
    """Parse the stage's path options, validate params.yaml before Prefect starts, run, exit 2 on user errors."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    for name in path_options:  # paths come from dvc.yaml, so they are declared in one place
        parser.add_argument(f"--{name}", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("pipeline", "flows"):  # Prefect sets the root logger to WARNING
        logging.getLogger(name).setLevel(logging.INFO)
    # SIGTERM (a stopped container, `kill`) unwinds like an error, so an MLflow run ends FAILED and
    # temp outputs are removed, instead of the process vanishing mid-write.
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    # and so does the end of whatever started the stage (`dvc repro` killed alone): an orphaned stage would go on
    # training and write outputs no dvc.lock records
    end_with_starter()
    try:
        params = with_project_paths(load_params(args.params))
        # a missing folder is one line here, as `demoire check-params` says it, not an error from inside a flow run
        # whose server took seconds to start
        check_stage_folders(params, args.params)
        with prefect_api(), pipeline_run_tags():
            run(params, args)
    except DemoireError as exc:
        print(f"error: {exc}{untracked_preset_hint(args.params)}", file=sys.stderr)
        sys.exit(2)


PIPELINE_RUN_ENV = "DEMOIRE_PIPELINE_RUN"  # set by flows.dvc_ops for the `dvc repro` a pipeline flow run starts


def pipeline_run_tags():
    """Prefect tags naming the pipeline flow run whose `dvc repro` started this stage (`pipeline-run:<id>`), so the
    stage's own flow run can be found from it in the UI or API; none for a stage run by hand."""
    from contextlib import nullcontext

    from prefect import tags

    parent = os.environ.get(PIPELINE_RUN_ENV)
    return tags(f"pipeline-run:{parent}") if parent else nullcontext()


def in_experiment_copy() -> bool:
    """Whether this stage runs in the copy `dvc exp run --temp/--queue` makes (it holds only what git tracks)."""
    return Path.cwd().resolve() != PROJECT_ROOT


def only_in_project(path: Path | str) -> bool:
    """Whether a relative path is missing here, in an experiment's copy, but present in the project."""
    path = Path(path)
    return not path.is_absolute() and not path.exists() and in_experiment_copy() and (PROJECT_ROOT / path).exists()


def from_project(path: Path) -> Path:
    """A relative folder only the project has: the project's one, as params.yaml documents relative folders
    (data and photos usually stay outside git); any other path as it is."""
    return PROJECT_ROOT / path if only_in_project(path) else Path(path)


def with_project_paths(params: Params) -> Params:
    """`params` with its relative source folders and imported datasets read from the project, where only the
    project has them (evaluate.real_sets are, in flows/evaluate.py)."""
    sources = params.synthesize.sources
    folders = [from_project(folder) for folder in sources.folders]
    datasets = [entry.model_copy(update={"path": from_project(entry.path)}) for entry in params.preprocess.datasets]
    return params.model_copy(update={
        "synthesize": params.synthesize.model_copy(update={"sources": sources.model_copy(update={"folders": folders})}),
        "preprocess": params.preprocess.model_copy(update={"datasets": datasets})})


def check_stage_folders(params: Params, params_path: Path) -> None:
    """The folders `params` (after with_project_paths) name exist where the stages read them: source folders and
    imported datasets from here, or the project where only it has them; real sets from the project
    (flows/evaluate.py)."""
    check_folders(params, str(params_path), Path.cwd(), PROJECT_ROOT)


def untracked_preset_hint(params_path: Path) -> str:
    """Why a preset file the project has is missing here: an experiment's copy holds only files git tracks
    (unlike data folders, a preset is the experiment's code and belongs in its commit)."""
    try:
        preset = (yaml.safe_load(Path(params_path).read_text()) or {}).get("synthesize", {}).get("preset")
    except (OSError, yaml.YAMLError, AttributeError):
        return ""
    if not isinstance(preset, str) or not only_in_project(preset):
        return ""
    return (f" ({preset} is in the project but not in this experiment's copy, which holds only the files git "
            f"tracks: `git add {preset}` and commit it, or run the experiment in the workspace)")


@contextmanager
def prefect_api() -> Iterator[None]:
    """Use the server at PREFECT_API_URL if set, else the project's shared temporary server.

    Process-pool workers inherit PREFECT_API_URL, so they report to the same server instead of
    each starting one (seconds each, and concurrent writers to one SQLite file).
    """
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.context import refresh_global_settings_context

    from flows.stage_server import shared_server

    with shared_server(Path(os.environ["PREFECT_HOME"])) as url:
        os.environ["PREFECT_API_URL"] = url
        links_set = _links_to_make_server()
        # Threads Prefect starts itself (the process pool's event forwarder) read the global
        # settings, not a context's: left at their import-time value they would start a second,
        # temporary server of their own on the same database.
        refresh_global_settings_context()
        try:
            yield
            _drain_prefect_clients()
        finally:
            del os.environ["PREFECT_API_URL"]
            if links_set:
                del os.environ["PREFECT_UI_URL"]
            refresh_global_settings_context()


def _links_to_make_server() -> bool:
    """Point Prefect's "View at" links at `make server`'s UI unless a UI URL is set (environment, profile or
    prefect.toml); whether it was set here.

    The shared server has no UI and stops a minute after the last stage, so links derived from its URL never
    open; `make server` serves the same database (`$PREFECT_HOME/prefect.db`) with its UI, where they open
    once it runs.
    """
    from prefect.settings import get_current_settings

    # a UI URL Prefect derives from the API URL is not among the fields set; one a user gave is
    if "PREFECT_UI_URL" in os.environ or "ui_url" in get_current_settings().model_fields_set:
        return False
    os.environ["PREFECT_UI_URL"] = f"http://127.0.0.1:{os.environ.get('PREFECT_PORT', '4200')}"
    return True


def _drain_prefect_clients() -> None:
    """Send queued logs and events while the server still runs (else exit hangs on retries)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    EventsWorker.drain_all(timeout=30)
