"""Registration under concurrency and kills: real processes on one real SQLite MLflow store.

Each worker is a separate Python process doing what the register stage does (log a run with the model,
register, gate) through pipeline.registry.transaction.register_run_once; `DEMOIRE_KILL_AT` kills it
with SIGKILL at a named point, and a rerun with the same inputs must finish that registration.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.evaluation.gate import GateRule, GateScores, decide_promotion

RULE = GateRule(0.05, 0.005)
WORKER = r"""
import json, sys
from pathlib import Path
import mlflow, torch
from mlflow.tracking import MlflowClient
from pipeline.config import InferParams
from pipeline.evaluation.gate import GateRule
from pipeline.faults import kill_point
from pipeline.models import ModelSpec, build_model, save_model
from pipeline.registry import log_demoire_model, use_tracking_store
from pipeline.registry.transaction import MODEL_URI_TAG, register_run_once

store, seed, psnr = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
use_tracking_store(store, "demoire")
model_dir = store / f"model-{seed}"
spec = ModelSpec("simple", 4, 2)
torch.manual_seed(seed)
save_model(build_model(spec), spec, model_dir)
metrics = {"test_psnr": psnr, "test_ssim": 0.8, "test_mse": 0.01}

def log_run(tags):
    with mlflow.start_run(tags=tags) as run:  # as flows/register.py logs it, with its kill points
        kill_point("register.run_started")
        mlflow.log_metrics(metrics)
        info = log_demoire_model(model_dir, InferParams())
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
        kill_point("register.model_logged")
    return run.info.run_id, info.model_uri

experiment = mlflow.get_experiment_by_name("demoire").experiment_id
version, run_id, decision = register_run_once(MlflowClient(), "demoire", experiment, f"key-{seed}", log_run,
                                              {**metrics, "gate_set": "g"}, GateRule(0.05, 0.005), None)
print(json.dumps({"version": version, "promote": decision.promote}))
"""


def start_worker(store: Path, seed: int, psnr: float, kill_at: str | None = None,
                 tracking_uri: str | None = None) -> subprocess.Popen:
    """A registering process (WORKER) on the SQLite store in `store`, or on the store at `tracking_uri`."""
    # the default lease (120 s): a killed holder on this host is seen gone at once, and a shorter lease lapsed
    # under load (three workers and the tracking server on a 2-core CI machine)
    env = dict(os.environ)
    env.pop("DEMOIRE_REGISTRY_LEASE_S", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    if kill_at:
        env["DEMOIRE_KILL_AT"] = kill_at
    return subprocess.Popen([sys.executable, "-c", WORKER, str(store), str(seed), str(psnr)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def registry_state(uri: str, name: str = "demoire") -> dict:
    """Versions with their tags, aliases, and the runs' statuses, read back in a fresh client."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    versions = {str(v.version): v.tags for v in client.search_model_versions(f"name='{name}'")}
    model = client.get_registered_model(name)
    experiment = client.get_experiment_by_name("demoire")
    statuses = [run.info.status for run in client.search_runs([experiment.experiment_id])]
    locks = [m.name for m in client.search_registered_models() if "registry-lock" in m.name]
    mlflow.set_tracking_uri(None)
    return {"versions": versions, "aliases": {a: str(v) for a, v in model.aliases.items()}, "statuses": statuses, "locks": locks,
            "history": json.loads(model.tags.get("champion_history", "[]"))}


def check_invariants(state: dict) -> None:
    """Every version decided exactly once, the champion the one the gate rule gives when versions are decided
    in registration order, ties never promoted, no run left RUNNING, no lock left."""
    champion = None
    for number in sorted(state["versions"], key=int):
        tags = state["versions"][number]
        assert tags.get("promotion") in ("promoted", "not_promoted"), (number, tags)
        scores = GateScores(number, float(tags["test_psnr"]), float(tags["test_ssim"]), float(tags["test_mse"]), "g")
        expected = decide_promotion(scores, champion, RULE)
        assert (tags["promotion"] == "promoted") is expected.promote, (number, tags["promotion_reason"])
        if expected.promote:
            champion = scores
    assert state["aliases"].get("champion") == (champion.version if champion else None)
    assert state["history"] == sorted(state["history"], key=int) and state["history"][-1:] == [champion.version]
    assert len(set(state["history"])) == len(state["history"]), state["history"]  # each champion once
    # no lock held; a broken one's name stays a day as a tombstone, so a slow waiter cannot break a new lock
    assert "RUNNING" not in state["statuses"] and [name for name in state["locks"] if ".stale." not in name] == []


@pytest.mark.slow
def test_three_concurrent_registrations_on_a_fresh_sqlite_store(tmp_path):
    # 22.0 and 22.02 tie within the margin: whichever registers second is never promoted over the first
    workers = [start_worker(tmp_path, seed, psnr) for seed, psnr in ((1, 22.0), (2, 22.02), (3, 23.0))]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    state = registry_state(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert sorted(state["versions"], key=int) == ["1", "2", "3"]
    check_invariants(state)


REGISTER_KILL_POINTS = ["register.run_started", "register.model_logged", "register.version_created",
                        "register.decision_recorded", "register.champion_moved"]


@pytest.mark.slow
def test_a_registration_killed_at_any_point_is_finished_by_its_rerun(tmp_path):
    first = start_worker(tmp_path, 1, 22.0)
    assert first.wait(timeout=600) == 0
    for attempt, point in enumerate(REGISTER_KILL_POINTS, start=2):
        psnr = 22.0 + attempt  # each beats the champion: the champion moves every time
        killed = start_worker(tmp_path, attempt, psnr, kill_at=point)
        killed.wait(timeout=600)
        assert killed.returncode == -9, point
        rerun = start_worker(tmp_path, attempt, psnr)
        out, err = rerun.communicate(timeout=600)
        assert rerun.returncode == 0, (point, err[-3000:])
        assert json.loads(out.strip().splitlines()[-1]) == {"version": str(attempt), "promote": True}, point
        state = registry_state(f"sqlite:///{tmp_path / 'mlflow.db'}")
        assert sorted(state["versions"], key=int) == [str(v) for v in range(1, attempt + 1)], point  # none added
        check_invariants(state)


def test_a_lock_released_while_mlflow_reports_it_taken_is_acquired(tmp_path):
    # MLflow's store answers a taken name by looking the model up; when the holder releases the lock between
    # the failed insert and that lookup, `create_registered_model` raises "not found" (CI, three processes)
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
    from mlflow.tracking import MlflowClient

    from pipeline.registry.transaction import RegistryLock

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    holder = RegistryLock(client, "demoire")
    holder.acquire()
    waiter = RegistryLock(client, "demoire", timeout_s=60)
    create, calls = client.create_registered_model, []

    def create_during_the_release(name, **kwargs):
        calls.append(name)
        if len(calls) == 1:
            holder.release()
            raise MlflowException(f"Registered Model with name={name} not found", error_code=RESOURCE_DOES_NOT_EXIST)
        return create(name, **kwargs)

    client.create_registered_model = create_during_the_release
    waiter.acquire()
    try:
        assert len(calls) == 2
        assert dict(client.get_registered_model(waiter.name).tags)["token"] == waiter.token
    finally:
        waiter.release()
    assert client.search_registered_models(f"name = '{waiter.name}'") == []


def test_a_waiter_says_once_whose_lock_it_waits_for(tmp_path, caplog):
    from mlflow.tracking import MlflowClient

    from pipeline.registry.transaction import RegistryBusyError, RegistryLock

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    holder = RegistryLock(client, "demoire")
    holder.acquire()
    try:
        with caplog.at_level("WARNING", logger="pipeline.registry.transaction"), pytest.raises(RegistryBusyError):
            RegistryLock(client, "demoire", timeout_s=2).acquire()
    finally:
        holder.release()
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for the registry lock")]
    assert waits == [f"waiting for the registry lock of demoire, held by {holder.owner} (a registration, promote "
                     "or rollback)"]


@pytest.mark.skipif(not Path("/proc/sys/kernel/random/boot_id").exists(), reason="no boot id: the host name alone")
def test_an_owner_is_gone_only_when_it_ran_on_this_machine_and_its_process_ended():
    from pipeline.registry.transaction import Owner, this_host

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    here = Owner.this_process()
    assert not here.gone() and Owner(this_host(), int(ended.stdout), here.started).gone()
    # A teammate's machine with the same host name (`vm`, a container image's): its boot id differs, so not ours.
    teammate = Owner(f"{socket.gethostname()}/ffffffff", int(ended.stdout), here.started)
    assert this_host().startswith(f"{socket.gethostname()}/") and not teammate.gone()
