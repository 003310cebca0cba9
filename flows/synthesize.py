"""Stage `synthesize`: clean sources → (moiré, clean) pairs + manifest, fanned out over processes or Dask."""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError
from pathlib import Path

from prefect import flow, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from flows._entry import run_stage
from flows.dvc_ops import warn_undeclared_folders
from flows.run_logs import unless_user_error
from pipeline.config import Params, SynthesizeParams, parse_params
from pipeline.data.synthetic import (check_renderer, check_replaceable_set, render_shard_resumably, renderer_digest,
                                     synthesize_dataset)
from pipeline.errors import InputDataError, first_line
from pipeline.evaluation.synth_report import compare_paired_sets
from pipeline.lifetime import die_with_parent
from pipeline.sources import SourceSpec

log = logging.getLogger(__name__)

SCHEDULER_TIMEOUT_S = 10


def task_runner(cfg: SynthesizeParams):
    """A Dask cluster when one is configured (it must answer), else a local process pool (threads for one worker)
    whose workers end with this process: a killed stage would otherwise leave them rendering (or waiting) as
    orphans."""
    if cfg.dask_address:
        from prefect_dask import DaskTaskRunner

        check_scheduler(cfg.dask_address)
        return DaskTaskRunner(address=cfg.dask_address)
    if cfg.workers == 1:
        return ThreadPoolTaskRunner(max_workers=1)
    return ProcessPoolTaskRunner(max_workers=cfg.workers, initializer=die_with_parent, initargs=(os.getpid(),))


def check_scheduler(address: str) -> None:
    """One line, not Dask's tracebacks after its 30 s, when no scheduler answers at `address`; a warning when it has
    no workers, for which the stage would wait without a word."""
    from distributed import Client

    answer: dict = {}

    def ask() -> None:
        try:
            with Client(address, timeout=SCHEDULER_TIMEOUT_S) as client:
                answer["workers"] = len(client.scheduler_info()["workers"])
        except Exception as exc:  # noqa: BLE001  (told below, in one line)
            answer["error"] = exc

    # Client's timeout covers the connection, not the handshake: a port that accepts and stays silent (a hung
    # scheduler, its dashboard's port) would hang it, so it asks in a thread given a few seconds more.
    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    asking.join(SCHEDULER_TIMEOUT_S + 5)
    if "workers" not in answer:
        why = first_line(str(answer.get("error", ""))) or f"no answer within {SCHEDULER_TIMEOUT_S} s"
        raise InputDataError(f"synthesize.dask_address = {address}: no Dask scheduler answers there ({why}); start "
                             f"one (`dask scheduler`, then `dask worker {address}` from this checkout) or leave the "
                             "key unset to render here")
    if not answer["workers"]:
        log.warning("the Dask scheduler at %s has no workers: the stage waits until one joins "
                    "(`dask worker %s`, started from this checkout)", address, address)


@task(name="render-shard", retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=unless_user_error)
def render_shard_task(indices: list[int], specs: list[SourceSpec], params: Params, work: Path,
                      renderer: str) -> list[dict]:
    """Render one shard of pairs into the resumable work folder and mark it finished, with the run's code."""
    check_renderer(renderer)  # a Dask worker can import another checkout's pipeline
    return render_shard_resumably(indices, specs, params.synthesize, params.seed, work)


@task(name="synth-report")
def synth_report_task(data: Path, report: Path) -> dict:
    """Input PSNR/SSIM histograms and residual spectrum of the rendered set, for calibration."""
    return compare_paired_sets([("synthetic", data)], report)


@flow(name="synthesize")
def synthesize_flow(params: Params, out: Path, report: Path | None = None) -> dict:
    """Render params.synthesize.n_pairs pairs into `out` (replaced only when all succeed; a killed run resumes), then report on them."""
    cfg = params.synthesize
    start = time.perf_counter()

    def run_shards(shards: list[list[int]], specs: list[SourceSpec], work: Path) -> Iterator[list[dict]]:
        if not shards:  # a resumed run with every shard finished
            return
        futures = render_shard_task.map(shards, unmapped(specs), unmapped(params), unmapped(work),
                                        unmapped(renderer_digest()))
        for future in as_completed(list(futures)):
            try:
                records = future.result()
            except CancelledError as exc:  # Dask's FutureCancelledError: the scheduler is gone
                if not cfg.dask_address:
                    raise
                raise InputDataError(f"lost the Dask scheduler at {cfg.dask_address} ({first_line(str(exc))}); "
                                     "the finished shards are kept: start the scheduler and its workers again, then "
                                     "rerun to resume") from None
            yield records

    summary = synthesize_dataset(cfg, params.seed, out, run_shards)
    psnr = ""
    if report is not None:
        described = synth_report_task(out, report)["sets"][0]
        psnr = f" Input PSNR {described['input_psnr_mean']:.2f} ± {described['input_psnr_std']:.2f} dB."
    create_markdown_artifact(
        key="synthesize-summary",
        markdown=(f"# Synthesis ({cfg.preset} preset)\n\n| pairs | sources | skipped sources | size | seconds |\n"
                  f"|---|---|---|---|---|\n| {summary['pairs']} | {summary['sources_used']} | "
                  f"{summary['sources_skipped']} | {cfg.size}² | {time.perf_counter() - start:.1f} |\n{psnr}\n"),
    )
    return summary


@flow(name="synthesize-set")
def synthesize_set_flow(out: str = "data/adhoc", preset: str = "default", n_pairs: int = 100, seed: int = 0,
                        size: int = 256, workers: int = 2, overwrite: bool = False) -> dict:
    """An ad-hoc synthetic set outside DVC (deployment `synthesize-set/adhoc`); bad values fail first, in one line.

    `out` (relative: to the worker's checkout) must be new, or with `overwrite` a synthetic set this flow or
    `demoire synthesize` wrote: it is replaced whole, so a folder holding anything else is refused."""
    keys = ("seed", "synthesize.preset", "synthesize.n_pairs", "synthesize.size", "synthesize.workers")
    params = parse_params({"seed": seed, "synthesize": {"preset": preset, "n_pairs": n_pairs, "size": size,
                                                        "workers": workers}}, source="parameters",
                          options={key: f"parameter {key.rpartition('.')[2]}" for key in keys})
    check_replaceable_set(Path(out), overwrite, "parameter out", "parameter overwrite=true",
                          writer="synthesize-set or demoire synthesize")
    return synthesize_flow.with_options(task_runner=task_runner(params.synthesize))(params=params, out=Path(out))


def main() -> None:
    """`python -m flows.synthesize --out data/synthesize --report data/synth_report`."""

    def run(params: Params, args: argparse.Namespace) -> None:
        warn_undeclared_folders("synthesize", "synthesize.sources.folders", params.synthesize.sources.folders,
                                "photos")
        synthesize_flow.with_options(task_runner=task_runner(params.synthesize))(
            params=params, out=args.out, report=args.report)

    run_stage(__doc__, ["out", "report"], run)


if __name__ == "__main__":
    main()
