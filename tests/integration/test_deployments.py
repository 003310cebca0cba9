"""The deployments of prefect.yaml on a real Prefect server, run by a real process worker."""

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.project import make_project, read_registry, run

# Its tests share one module-scoped fixture and build on what the earlier ones left in it: `make test`
# (--dist loadfile) runs the whole module in one xdist process.
pytestmark = pytest.mark.slow
PREFECT = [sys.executable, "-m", "prefect"]


@dataclass
class Deployed:
    """A project copy whose pools, deployments and automations exist on the server, and its workers."""

    repo: Path
    env: dict[str, str]
    deploy_output: str
    workers: list[subprocess.Popen] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)  # worker pid → its log file

    def start_worker(self, pool: str = "cpu", checkout: Path | None = None) -> subprocess.Popen:
        """A process worker for `pool` running flows in `checkout` (this project copy by default)."""
        checkout = checkout or self.repo
        env = {**self.env, "DEMOIRE_PROJECT_DIR": str(checkout)}
        path = checkout.parent / f"{checkout.name}-{pool}-worker-{len(self.workers)}.log"
        with open(path, "w") as log:  # the child keeps its own copy of the descriptor
            worker = subprocess.Popen([*PREFECT, "worker", "start", "--pool", pool, "--limit", "1"], cwd=checkout,
                                      env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(worker)
        self.logs[worker.pid] = path
        return worker


def _cmdline(process) -> list[str]:
    """A process's command line; none for one that ended since it was listed (a short-lived dvc or git helper)."""
    import psutil

    try:
        return process.cmdline()
    except psutil.Error:
        return []


def kill_with_descendants(pid: int) -> None:
    """SIGKILL a process and everything under it, as a lost machine or an OOM kill of the group would."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, prefect_server):
    """The project deployed as `make deploy` does it, with a `cpu` worker running."""
    repo = tmp_path_factory.mktemp("deployed")
    env = make_project(repo, prefect_server)
    env.pop("DEMOIRE_PROJECT_DIR", None)  # set per worker, so `prefect deploy` leaves its placeholder in
    for pool in ("cpu", "gpu"):
        run([*PREFECT, "work-pool", "create", pool, "--type", "process", "--overwrite"], repo, env, timeout=120)
    output = run([*PREFECT, "--no-prompt", "deploy", "--all"], repo, env, timeout=300).stdout
    output += run([sys.executable, "-m", "flows.automations"], repo, env, timeout=120).stdout
    project = Deployed(repo, {**env, "DEMOIRE_PROJECT_DIR": str(repo)}, output)
    project.start_worker("cpu")
    yield project
    for worker in project.workers:
        kill_with_descendants(worker.pid)
        worker.wait()


def _artifacts(flow_run_id) -> dict[str, str]:
    """Artifacts of one flow run, by key."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {artifact.key: artifact.data for artifact in found}


def _log_messages(flow_run_id) -> list[str]:
    """Every log message of one flow run, as the UI shows them."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    messages, page = [], 200
    with get_client(sync_client=True) as client:
        while batch := client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                        limit=page, offset=len(messages)):
            messages += [log.message for log in batch]
    return messages


def _completed_flows() -> set[str]:
    """Names of the flows with a completed run on the server."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType

    completed = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["COMPLETED"])))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=completed)
        return {client.read_flow(flow_run.flow_id).name for flow_run in runs}


def test_every_deployment_of_prefect_yaml_is_created(deployed, prefect_api):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
    assert {"nightly", "train-gpu", "adhoc"} <= set(deployments)
    nightly = deployments["nightly"]
    assert nightly.work_pool_name == "cpu" and nightly.schedules[0].schedule.cron == "0 2 * * *"
    assert deployments["train-gpu"].work_pool_name == "gpu"
    assert deployments["train-gpu"].global_concurrency_limit.limit == 1
    for deployment in deployments.values():  # heartbeats often enough for the automation below
        assert deployment.job_variables["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    from prefect.automations import Automation

    automation = Automation.read(name="crash-flow-runs-without-heartbeat")
    assert automation.trigger.within.total_seconds() == 90 and automation.actions[0].state.value == "CRASHED"
    # Each worker's own checkout, resolved when the run starts on it, not when deploying.
    assert nightly.pull_steps == [{"flows.worker_steps.enter_project_dir": {"directory": "{{ $DEMOIRE_PROJECT_DIR }}"}}]


def test_the_nightly_schedule_gets_its_runs_from_the_server(deployed, prefect_api):
    """The server's scheduler turns the cron into scheduled runs (with SQLAlchemy 2.1 it failed on every loop)."""
    import time
    from datetime import timezone

    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    nightly = DeploymentFilter(name=DeploymentFilterName(any_=["nightly"]))
    deadline, scheduled = time.monotonic() + 90, []
    while time.monotonic() < deadline and not scheduled:  # the recent-deployments scheduler loops every 5 s
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(deployment_filter=nightly)
        scheduled = [run for run in runs if run.state_name == "Scheduled"]
        time.sleep(2)
    assert scheduled, "no scheduled run of pipeline/nightly"
    starts = {run.expected_start_time.astimezone(timezone.utc) for run in scheduled}
    assert {(start.hour, start.minute) for start in starts} == {(2, 0)}, starts  # prefect.yaml's cron, in UTC


def test_the_pipeline_deployment_runs_every_stage_on_the_worker(deployed, prefect_api):
    from prefect.deployments import run_deployment

    repo, env = deployed.repo, deployed.env
    flow_run = run_deployment("pipeline/nightly", timeout=900, poll_interval=2)
    assert flow_run.state.is_completed(), flow_run.state
    summary = _artifacts(flow_run.id)["pipeline-summary"]
    assert "training: this worker (no live worker in the `gpu` pool)" in summary
    assert "v1 promoted to `champion`" in summary
    assert {"synthesize", "preprocess", "train", "evaluate", "register", "pipeline"} <= _completed_flows()
    shown = _log_messages(flow_run.id)  # `dvc repro`'s output reached the run's log (and the worker's terminal)
    assert {"Running stage 'train':", "Running stage 'register':"} <= set(shown), shown[:20]
    for rel in ("data/synthesize/manifest.parquet", "data/train/model.pt", "data/evaluate/metrics.json"):
        assert (repo / rel).is_file(), rel
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo, env).stdout
    assert read_registry(repo, env)["aliases"] == {"champion": "1", "challenger": "1"}

    again = run_deployment("pipeline/nightly", timeout=300, poll_interval=2)  # nothing changed: nothing reruns
    assert again.state.is_completed()
    assert "training: not retrained (up to date)" in _artifacts(again.id)["pipeline-summary"]
    assert "nothing registered (up to date); the last registration: `demoire` v1, promoted" in _artifacts(again.id)[
        "pipeline-summary"]


def test_a_synthesis_run_with_bad_parameters_fails_with_the_one_line_message(deployed, prefect_api):
    from prefect.deployments import run_deployment

    repo = deployed.repo
    flow_run = run_deployment("synthesize-set/adhoc", parameters={"preset": "wavy", "out": "data/bad"},
                              timeout=300, poll_interval=2)
    assert flow_run.state.is_failed()
    assert "parameter preset 'wavy': preset 'wavy' is neither a built-in preset (default, " in (
        flow_run.state.message or "")
    assert not (repo / "data/bad").exists()


def test_a_synthesis_run_writes_the_set_it_was_asked_for(deployed, prefect_api):
    from prefect.deployments import run_deployment

    repo = deployed.repo
    flow_run = run_deployment("synthesize-set/adhoc", parameters={"n_pairs": 3, "size": 48, "seed": 5, "workers": 1,
                                                                 "out": "data/adhoc"}, timeout=300, poll_interval=2)
    assert flow_run.state.is_completed(), flow_run.state
    assert len(list((repo / "data/adhoc/moire").glob("*.png"))) == 3
    from prefect.artifacts import Artifact

    assert "| 3 |" in Artifact.get("synthesize-summary").data  # published by its synthesize subflow
    assert json.loads((repo / "data/adhoc/summary.json").read_text())["pairs"] == 3


def test_training_goes_to_a_live_gpu_worker_through_the_dvc_remote(deployed, prefect_api, tmp_path):
    import time

    import yaml
    from prefect.deployments import run_deployment

    from flows.full_pipeline import worker_online_task

    repo, env = deployed.repo, deployed.env
    remote = tmp_path / "shared-remote"  # the DVC remote both machines reach
    gpu_repo = tmp_path / "gpu-checkout"  # another machine's checkout of the same commit
    run(["git", "clone", "-q", str(repo), str(gpu_repo)], tmp_path, env)
    for checkout in (repo, gpu_repo):
        run(["dvc", "remote", "modify", "--local", "local", "url", str(remote)], checkout, env)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["epochs"] = 3  # changed params: the train stage is out of date
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    gpu_worker = deployed.start_worker("gpu", gpu_repo)
    try:
        deadline = time.monotonic() + 180  # its first heartbeat marks it online: what the pipeline asks before training
        while not worker_online_task.fn("gpu"):
            assert gpu_worker.poll() is None and time.monotonic() < deadline, deployed.logs[gpu_worker.pid].read_text()
            time.sleep(1)
        flow_run = run_deployment("pipeline/nightly", timeout=900, poll_interval=2)
    finally:
        kill_with_descendants(gpu_worker.pid)
    assert flow_run.state.is_completed(), (flow_run.state, deployed.logs[gpu_worker.pid].read_text()[-3000:])
    assert "training: the `gpu` pool" in _artifacts(flow_run.id)["pipeline-summary"]
    # Trained over there, and the model, history and lock entry came back here through the remote.
    assert (gpu_repo / "data/train/model.pt").read_bytes() == (repo / "data/train/model.pt").read_bytes()
    assert len((repo / "data/train/history.csv").read_text().splitlines()) == 1 + 3
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo, env).stdout


def test_the_kubernetes_template_requests_a_gpu_for_the_flow_run_pod():
    from tests.integration.project import ROOT

    template = json.loads((ROOT / "deploy/kubernetes-gpu-job-template.json").read_text())
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["name"] == "prefect-job" and pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_limit }}"
    assert template["variables"]["properties"]["gpu_limit"]["default"] == "1"
    # prefect-kubernetes 0.8's default template underneath (the extra pins it): its variables, placeholders kept
    assert {"annotations", "backoff_limit", "image", "env", "namespace", "finished_job_ttl"} <= set(
        template["variables"]["properties"])
    assert template["job_configuration"]["job_manifest"]["spec"]["backoffLimit"] == "{{ backoff_limit }}"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_a_pipeline_run_whose_worker_dies_mid_training_is_marked_crashed_and_a_rerun_completes(deployed, prefect_api):
    import time

    import psutil
    import yaml
    from prefect import get_client
    from prefect.deployments import run_deployment

    repo, env = deployed.repo, deployed.env
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["epochs"] = 60  # long enough to be caught mid-training
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    # The gpu worker of the test before still reads as online (for 90 s after its last heartbeat):
    # the pipeline must notice that nobody starts its training run and train here instead.
    fallback = {"gpu_pickup_timeout_s": 10}
    checkpoint = repo / "data/train/checkpoint.pt"  # the gpu test before brought one back: wait for a new one
    started = checkpoint.stat().st_mtime if checkpoint.exists() else 0.0
    model = repo / "data/train/model.pt"  # the last good model (persist: DVC keeps it while the stage reruns)
    last_model = model.stat().st_mtime if model.exists() else None
    flow_run = run_deployment("pipeline/nightly", parameters=fallback, timeout=0)  # the cpu worker picks it up
    cpu_worker = psutil.Process(deployed.workers[0].pid)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (
        checkpoint.exists() and checkpoint.stat().st_mtime > started
        and any("flows.train" in " ".join(_cmdline(p)) for p in cpu_worker.children(recursive=True))
    ):
        time.sleep(0.5)
    assert checkpoint.stat().st_mtime > started, "training never wrote a checkpoint on the cpu worker"
    # The machine dies: the worker, the flow run and everything under them. Nobody is left to report
    # the crash; the run's heartbeats stop and the server's automation marks it Crashed.
    kill_with_descendants(cpu_worker.pid)
    deployed.workers[0].wait()

    with get_client(sync_client=True) as client:
        assert client.read_flow_run(flow_run.id).state.is_running()
        deadline = time.monotonic() + 300
        while not client.read_flow_run(flow_run.id).state.is_final() and time.monotonic() < deadline:
            time.sleep(2)
        state = client.read_flow_run(flow_run.id).state
    assert state.is_crashed(), state
    assert "No heartbeat for 90 s" in state.message
    # no output of the killed stage looks complete: the model is the last good one, or none
    assert (model.stat().st_mtime if model.exists() else None) == last_model

    deployed.start_worker("cpu")  # the machine is back
    rerun = run_deployment("pipeline/nightly", parameters=fallback, timeout=900, poll_interval=2)
    assert rerun.state.is_completed(), rerun.state
    assert "training: this worker" in _artifacts(rerun.id)["pipeline-summary"]
    assert model.is_file() and model.stat().st_mtime > started
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo, env).stdout
