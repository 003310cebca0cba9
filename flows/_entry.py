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

from pipeline.config import Params, load_params
from pipeline.errors import DemoireError


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
    logging.getLogger("pipeline").setLevel(logging.INFO)  # Prefect sets the root logger to WARNING
    # SIGTERM (a stopped container, `kill`) unwinds like an error, so an MLflow run ends FAILED and
    # temp outputs are removed, instead of the process vanishing mid-write.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        params = load_params(args.params)
        with prefect_api():
            run(params, args)
    except DemoireError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


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
        # Threads Prefect starts itself (the process pool's event forwarder) read the global
        # settings, not a context's: left at their import-time value they would start a second,
        # temporary server of their own on the same database.
        refresh_global_settings_context()
        try:
            yield
            _drain_prefect_clients()
        finally:
            del os.environ["PREFECT_API_URL"]
            refresh_global_settings_context()


def _drain_prefect_clients() -> None:
    """Send queued logs and events while the server still runs (else exit hangs on retries)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    EventsWorker.drain_all(timeout=30)
