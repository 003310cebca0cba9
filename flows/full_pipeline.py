"""Deployments `pipeline` (the whole `dvc repro`) and `train-on-worker` (the train stage on a GPU pool).

(Not named pipeline.py: Prefect puts a deployment's script folder on sys.path, where a
`pipeline` module would hide the `pipeline` library.)

The pipeline runs the stages up to preprocessing, then sends training to the GPU work pool when a
worker there is online: it pushes the data to the DVC remote, runs the `train-on-worker`
deployment (which pulls, trains, pushes and publishes its dvc.lock entry), adopts that entry and
pulls the model. Otherwise, or for any stage left, `dvc repro` runs here. Stages whose inputs did
not change are skipped by DVC either way.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

import yaml
from prefect import flow, get_client, task
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.client.schemas.filters import WorkerFilter, WorkerFilterStatus
from prefect.deployments import run_deployment
from prefect.client.schemas.objects import State
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled

from flows.dvc_ops import (REPRO_TIMEOUT_S, adopt_stage_locks_task, dvc_pull_task, dvc_push_task, dvc_repro_task,
                           stage_lock, stale_stages_task)
from pipeline.config import load_params
from pipeline.errors import DemoireError
from pipeline.io import atomic_path
from pipeline.provenance import git_commit

UPSTREAM_OF_TRAIN = ["synthesize", "preprocess"]
LOCK_ARTIFACT = "train-lock"
POLL_S = 2
PARAMS_FILE = Path("params.yaml")
REGISTRATION = Path("data/register/registration.json")
METRICS = Path("data/evaluate/metrics.json")


@task(name="gpu-worker-online", retries=2, retry_delay_seconds=5)
def worker_online_task(pool: str) -> bool:
    """Whether `pool` exists and has a worker that sent a heartbeat lately."""
    with get_client(sync_client=True) as client:
        try:  # the workers' listing answers a missing pool with a bare HTTP 404; the pool's own read says so
            client.read_work_pool(pool)
        except ObjectNotFound:
            return False
        online = client.read_workers_for_work_pool(
            pool, worker_filter=WorkerFilter(status=WorkerFilterStatus(any_=["ONLINE"])))
    return bool(online)


def lock_markdown(stage: str, entry: dict) -> str:
    """The artifact that carries a stage's dvc.lock entry back to the pipeline (and shows it in the UI)."""
    return (f"# Stage `{stage}` ran on {socket.gethostname()}\n\nIts `dvc.lock` entry; the outputs are in the "
            f"DVC remote.\n\n```yaml\n{yaml.safe_dump(entry, sort_keys=False)}```\n")


@task(name="read-train-lock", retries=2, retry_delay_seconds=5)
def read_lock_artifact_task(flow_run_id) -> dict:
    """The dvc.lock entry the `train-on-worker` run published."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[LOCK_ARTIFACT]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    if not found:
        raise DemoireError(f"the train-on-worker run {flow_run_id} published no {LOCK_ARTIFACT} artifact")
    return yaml.safe_load(found[0].data.split("```yaml\n", 1)[1].rsplit("```", 1)[0])


@flow(name="train-on-worker")
def train_on_worker_flow(commit: str, params_yaml: str, upstream_lock: dict[str, dict]) -> dict:
    """Train as the calling pipeline would: same commit, params and input data; push the model back.

    The pipeline passes its git commit, params.yaml and the dvc.lock entries of the stages before
    training, so this checkout (on another machine) pulls exactly those inputs from the DVC remote.
    """
    here = checkout_commit()
    if here != commit:
        raise DemoireError(f"this worker's checkout is at {here[:12]}, the pipeline's at {commit[:12]}; "
                           "check out the same commit on both")
    with atomic_path(PARAMS_FILE) as tmp:
        tmp.write_text(params_yaml)
    adopt_stage_locks_task(upstream_lock)
    dvc_pull_task(UPSTREAM_OF_TRAIN)
    dvc_repro_task(["train"])
    dvc_push_task(["train"])
    entry = stage_lock("train")
    create_markdown_artifact(key=LOCK_ARTIFACT, markdown=lock_markdown("train", entry))
    return entry


def train_remotely(gpu_pool: str, train_deployment: str, pickup_timeout_s: float) -> bool:
    """Run the train stage through the GPU pool's deployment and take its result in here.

    False when no worker started the run within `pickup_timeout_s` (it is then cancelled): a worker
    that died still reads as online for about 90 s after its last heartbeat.
    """
    dvc_push_task(UPSTREAM_OF_TRAIN)
    inputs = {"commit": checkout_commit(), "params_yaml": PARAMS_FILE.read_text(),
              "upstream_lock": {stage: stage_lock(stage) for stage in UPSTREAM_OF_TRAIN}}
    run = run_deployment(train_deployment, parameters=inputs, timeout=0)  # scheduled, not awaited
    state = wait_for_state(run.id, pickup_timeout_s, lambda state: not state.is_scheduled())
    if state.is_scheduled():
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, Cancelled(message=f"no {gpu_pool} worker started it"), force=True)
        return False
    state = wait_for_state(run.id, REPRO_TIMEOUT_S, lambda state: state.is_final())
    if not state.is_completed():
        raise DemoireError(f"training on the {gpu_pool} pool ended {state.type.value} "
                           f"(flow run {run.id}): {state.message or 'no message'}")
    adopt_stage_locks_task({"train": read_lock_artifact_task(run.id)})
    dvc_pull_task(["train"])
    return True


def wait_for_state(flow_run_id, timeout_s: float, reached: Callable[[State], bool]) -> State:
    """Poll a flow run until its state satisfies `reached` or `timeout_s` passes; its last state."""
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(flow_run_id).state
            if reached(state) or time.monotonic() > deadline:
                return state
            time.sleep(POLL_S)


def uncommitted_train_code() -> list[str]:
    """The train stage's deps that differ from this checkout's commit (edited or new): a GPU worker checks out
    the commit, so it would train other code than the lock then records."""
    checkout_commit()  # one line where git or .git is missing, not git's traceback below
    deps = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]["train"]["deps"]
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", *deps],
                            capture_output=True, text=True, check=True).stdout  # DVC outputs are git-ignored
    return [line[3:] for line in status.splitlines()]


def checkout_commit() -> str:
    """The commit this checkout is at; one line where there is none to read (a container image without git or .git)."""
    commit = git_commit(Path.cwd())
    if commit is None:
        raise DemoireError(f"{Path.cwd()} is not a git checkout with git installed: the pipeline and train-on-worker "
                           "flows compare commits, so their checkout (an image's too) needs its .git folder and git")
    return commit


@flow(name="pipeline")
def pipeline_flow(gpu_pool: str = "gpu", train_deployment: str = "train-on-worker/train-gpu",
                  gpu_pickup_timeout_s: float = 300) -> dict:
    """`dvc repro` of every stage, training on the GPU pool when it has a live worker."""
    start = time.perf_counter()
    load_params(PARAMS_FILE)  # invalid params stop here, with the CLI's one-line message
    stale = stale_stages_task()
    registered_before = REGISTRATION.read_text() if REGISTRATION.is_file() else None
    dvc_repro_task(UPSTREAM_OF_TRAIN)
    trained_on = "not retrained (up to date)"
    if "train" in stale_stages_task():
        edited = uncommitted_train_code()
        if edited:
            trained_on = (f"this worker (the train stage's code has uncommitted changes a `{gpu_pool}` worker "
                          f"would not have: {', '.join(edited[:3])}{', …' if len(edited) > 3 else ''})")
        elif not worker_online_task(gpu_pool):
            trained_on = f"this worker (no live worker in the `{gpu_pool}` pool)"
        elif train_remotely(gpu_pool, train_deployment, gpu_pickup_timeout_s):
            trained_on = f"the `{gpu_pool}` pool"
        else:
            trained_on = f"this worker (no `{gpu_pool}` worker started it within {gpu_pickup_timeout_s:.0f} s)"
    dvc_repro_task([])
    summary = {"stale_stages": stale, "trained_on": trained_on, "seconds": time.perf_counter() - start,
               "metrics": json.loads(METRICS.read_text()) if METRICS.is_file() else None,
               "registration": json.loads(REGISTRATION.read_text()) if REGISTRATION.is_file() else None}
    # each registration names a new version, so an unchanged file means this run registered nothing
    summary["registered"] = REGISTRATION.is_file() and REGISTRATION.read_text() != registered_before
    create_markdown_artifact(key="pipeline-summary", markdown=summary_markdown(summary))
    return summary


def summary_markdown(summary: dict) -> str:
    """The pipeline run in a few lines: what ran, where training ran, the metrics and the champion decision."""
    lines = [f"# Pipeline run ({summary['seconds']:.0f} s)", "",
             f"- stages out of date at the start: {', '.join(summary['stale_stages']) or 'none'}"
             + (" (and the stages after them)" if summary["stale_stages"] else ""),
             f"- training: {summary['trained_on']}"]
    metrics, record = summary["metrics"], summary["registration"]
    if metrics:
        lines.append(f"- test PSNR {metrics['psnr']:.2f} dB (input {metrics['identity_psnr']:.2f}), "
                     f"SSIM {metrics['ssim']:.3f}, MSE {metrics['mse']:.5f} over {metrics['count']} pairs")
    if metrics and metrics.get("real_mean"):
        mean = metrics["real_mean"]
        lines.append(f"- real sets ({', '.join(metrics['real'])}): PSNR {mean['psnr']:.2f} dB, tone-aligned PSNR "
                     f"{mean['tone_psnr']:.2f} dB, SSIM {mean['ssim']:.3f} (means over sets)")
    if record and summary.get("registered", True) and record.get("registered_earlier"):
        from pipeline.evaluation.run_report import earlier_registration_text  # here: it imports torch, this flow not

        lines.append(f"- {earlier_registration_text(record)}")
    elif record and summary.get("registered", True):
        verdict = "promoted to `champion`" if record["promote"] else "not promoted"
        lines.append(f"- `{record['model_name']}` v{record['version']} {verdict}: {record['reason']}")
    elif record:  # nothing registered by this run: the decision on file is an earlier run's
        lines.append(f"- nothing registered (up to date); the last registration: `{record['model_name']}` "
                     f"v{record['version']}, {'promoted' if record['promote'] else 'not promoted'}")
    return "\n".join(lines) + "\n"
