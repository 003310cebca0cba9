"""Live training telemetry on a real MLflow SQLite store: metrics while training runs, resume, dead runs."""

import logging
import subprocess
import sys
import time

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.config import parse_params
from pipeline.errors import ServiceUnavailableError
from pipeline.models import ModelSpec, build_model
from pipeline.registry.transaction import OWNER_TAG, Owner
from pipeline.training.batches import stored_pair_batches
from pipeline.training.loop import train_model
from pipeline.training.telemetry import RUN_FILE, live_training_run, recorded_run_id
from tests.training.test_training import _stripes

TRAIN = {"model": "simple", "channels": 8, "depth": 2, "epochs": 3, "batch_size": 2, "patch_size": 16,
         "log_every_steps": 2, "device": "cpu"}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder (DVC_ROOT, as `dvc exp run` sets it) whose own SQLite store the stage uses."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DVC_EXP_NAME", "exp-a")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def _params(**train):
    return parse_params({"seed": 1, "train": {**TRAIN, **train}})


def _train(params, out, pairs, hook=None):
    """Train as train_in_process does, streaming to MLflow; `hook(history, run_id)` after each epoch."""
    model = build_model(ModelSpec("simple", 8, 2))
    with live_training_run(params, out) as telemetry:
        def on_epoch(history):
            telemetry.on_epoch(history)
            if hook is not None:
                hook(history, telemetry.run_id)

        train_model(model, stored_pair_batches(pairs, params.train, params.seed), pairs[:1], params.train,
                    params.seed, torch.device("cpu"), out / "checkpoint.pt", on_epoch,
                    on_start=telemetry.on_start, on_step=telemetry.on_step)
    return telemetry.run_id


def _metric(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_training_streams_metrics_to_the_project_store_while_it_runs(project, rng):
    pairs = _stripes(rng, n=4)  # 4 pairs, batch 2: 2 steps per epoch
    seen_live = []

    def while_running(history, run_id):
        run = MlflowClient().get_run(run_id)
        seen_live.append((run.info.status, [s for s, _ in _metric(MlflowClient(), run_id, "val_psnr")]))

    run_id = _train(_params(), project / "train", pairs, while_running)
    assert seen_live == [("RUNNING", [1]), ("RUNNING", [1, 2]), ("RUNNING", [1, 2, 3])]
    assert (project / "mlflow.db").is_file() and recorded_run_id(project / "train") == run_id
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["demoire.stage"] == "train" and run.data.tags["dvc_experiment"] == "exp-a"
    assert run.data.params["train.lr"] == "0.001" and run.data.params["train.log_every_steps"] == "2"
    assert client.get_experiment(run.info.experiment_id).name == "demoire"
    assert {"train_loss", "val_loss", "val_psnr", "lr", "epoch_seconds"} <= set(run.data.metrics)
    assert [step for step, _ in _metric(client, run_id, "train_loss_running")] == [2, 4, 6]  # every 2 steps
    assert _metric(client, run_id, "lr")[-1][1] == pytest.approx(0.0, abs=1e-9)  # cosine decay ends at 0


def test_a_resumed_training_continues_its_run_and_a_dead_one_ends_failed(project, rng):
    pairs, out = _stripes(rng, n=4), project / "train"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = Owner(Owner.this_process().host, int(dead.stdout), time.time())

    class Killed(BaseException):
        """Stands for kill -9: the run is left as the dead process left it."""

    def kill_after_first_epoch(history, run_id):
        if len(history) == 1:
            MlflowClient().set_tag(run_id, OWNER_TAG, str(gone))
            raise Killed

    telemetry = live_training_run(_params(), out)
    telemetry.system_metrics = False  # its monitor thread would outlive this "killed" training
    with pytest.raises(Killed):  # not used as a context manager: a killed process ends no run
        train_model(build_model(ModelSpec("simple", 8, 2)), stored_pair_batches(pairs, _params().train, 1), pairs[:1],
                    _params().train, 1, torch.device("cpu"), out / "checkpoint.pt",
                    lambda h: (telemetry.on_epoch(h), kill_after_first_epoch(h, telemetry.run_id)),
                    on_start=telemetry.on_start, on_step=telemetry.on_step)
    first = recorded_run_id(out)
    client = MlflowClient()
    assert client.get_run(first).info.status == "RUNNING"  # as the killed process left it

    resumed = _train(_params(), out, pairs)  # same params and data: resumes after epoch 1
    assert resumed == first and client.get_run(first).info.status == "FINISHED"
    assert [step for step, _ in _metric(client, first, "val_psnr")] == [1, 2, 3]

    client.update_run(first, status="RUNNING")  # a later training of it killed again...
    client.set_tag(first, OWNER_TAG, str(gone))
    fresh = _train(_params(lr=0.002), out, pairs)  # ...then other params: a new run, the dead one ends FAILED
    assert fresh != first and recorded_run_id(out) == fresh
    assert client.get_run(first).info.status == "FAILED" and client.get_run(fresh).info.status == "FINISHED"


def test_a_run_killed_mid_epoch_logs_each_step_once_after_its_resume(project, rng):
    pairs, out, params = _stripes(rng, n=8), project / "train", _params(log_every_steps=1)  # 4 steps an epoch

    class Killed(BaseException):
        """Stands for kill -9 in the middle of epoch 2, after its first steps were logged."""

    telemetry = live_training_run(params, out)
    telemetry.system_metrics = False

    def on_step(step):
        telemetry.on_step(step)
        if step.global_step == 6:
            raise Killed

    with pytest.raises(Killed):
        train_model(build_model(ModelSpec("simple", 8, 2)), stored_pair_batches(pairs, params.train, 1), pairs[:1],
                    params.train, 1, torch.device("cpu"), out / "checkpoint.pt", telemetry.on_epoch,
                    on_start=telemetry.on_start, on_step=on_step)
    client = MlflowClient()
    killed = dict(_metric(client, telemetry.run_id, "train_loss_running"))
    assert sorted(killed) == [1, 2, 3, 4, 5, 6]

    redone: dict[int, float] = {}
    again = live_training_run(params, out)
    again.system_metrics = False

    def record(step):
        redone[step.global_step] = step.loss
        again.on_step(step)

    with again:  # redoes epoch 2 from the checkpoint after epoch 1
        train_model(build_model(ModelSpec("simple", 8, 2)), stored_pair_batches(pairs, params.train, 1), pairs[:1],
                    params.train, 1, torch.device("cpu"), out / "checkpoint.pt", again.on_epoch,
                    on_start=again.on_start, on_step=record)
    steps = _metric(client, again.run_id, "train_loss_running")
    assert again.run_id == telemetry.run_id and [step for step, _ in steps] == list(range(1, 13))
    # leaving the redone steps out loses nothing: they are the killed run's losses again
    assert sorted(redone) == list(range(5, 13)) and [redone[5], redone[6]] == [killed[5], killed[6]]


def test_a_failing_training_ends_its_run_failed(project, rng):
    pairs = _stripes(rng, n=4)

    def fail(history, run_id):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        _train(_params(), project / "train", pairs, fail)
    assert MlflowClient().get_run(recorded_run_id(project / "train")).info.status == "FAILED"


def test_a_dead_tracking_server_is_one_line_not_minutes_of_retries(project, monkeypatch):
    from tests.conftest import _free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError,
                       match=r"^MLFLOW_TRACKING_URI=http://127\.0\.0\.1:\d+: no MLflow server answers"):
        live_training_run(_params(), project / "train")
    assert time.monotonic() - started < 30
    assert not (project / "train" / RUN_FILE).exists()


def test_training_reports_step_progress_with_the_run_eta_as_log_lines(tmp_path, rng, monkeypatch, caplog):
    monkeypatch.setenv("DEMOIRE_PROGRESS", "log")
    params = _params(epochs=2)
    pairs = _stripes(rng, n=4)
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        train_model(build_model(ModelSpec("simple", 8, 2)), stored_pair_batches(pairs, params.train, 1), pairs[:1],
                    params.train, 1, torch.device("cpu"), tmp_path / "c.pt")
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.progress"]
    assert len(lines) == 2 and lines[0].startswith("train epoch 1/2: 2/2 steps (100%)")
    assert lines[1].startswith("train epoch 2/2 (run ETA 0:00:") and "2/2 steps (100%)" in lines[1]


@pytest.mark.slow
def test_a_tracking_server_that_goes_away_mid_training_costs_a_warning_not_the_training(project, rng, monkeypatch,
                                                                                         caplog):
    import pipeline.training.telemetry as telemetry
    from tests.conftest import _free_port, mlflow_server, stop_server

    port = _free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refused connection fails at once
    monkeypatch.setattr(telemetry, "RETRY_AFTER_S", 0.0)  # and every later metric tries the store again
    servers = [mlflow_server(project, port)]

    def outage(history, run_id):
        if len(history) == 1:  # the server stops for epoch 2 and is back for epoch 3
            stop_server(servers.pop())
        elif len(history) == 2:
            servers.append(mlflow_server(project, port))

    try:
        with caplog.at_level(logging.INFO, logger="pipeline.training.telemetry"):
            run_id = _train(_params(epochs=4), project / "train", _stripes(rng, n=4), outage)
        client = MlflowClient()
        assert client.get_run(run_id).info.status == "FINISHED"
        assert [step for step, _ in _metric(client, run_id, "val_psnr")] == [1, 2, 3, 4]  # epoch 2's waited
        ours = [r for r in caplog.records if r.name == telemetry.__name__]  # MLflow's monitor warns on its own
        warnings = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and warnings[0].startswith("MLflow store stopped answering (MlflowException: ")
        assert any(r.getMessage().startswith("MLflow store answers again") for r in ours)
    finally:
        for server in servers:
            stop_server(server)


def test_metrics_the_store_refuses_are_dropped_not_held_against_the_rest(project, caplog):
    telemetry = live_training_run(_params(), project / "train")
    telemetry.system_metrics = False
    with telemetry, caplog.at_level(logging.WARNING, logger="pipeline.training.telemetry"):
        telemetry.on_start([])
        telemetry._log({"not a metric name!": 1.0}, 1)  # INVALID_PARAMETER_VALUE: it would be refused again
        telemetry._log({"val_psnr": 20.0}, 1)
    assert _metric(MlflowClient(), telemetry.run_id, "val_psnr") == [(1, 20.0)]
    ours = [r.getMessage()[:40] for r in caplog.records if r.name == "pipeline.training.telemetry"]
    assert ours == ["MLflow store refused 1 metrics (MlflowEx"]
