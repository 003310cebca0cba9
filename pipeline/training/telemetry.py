"""Live training telemetry: the train stage streams its metrics to MLflow while it runs.

One MLflow run per training run, in the project's store and the registration's experiment, tagged
`demoire.stage=train`, with the DVC experiment's name and the git commit: params at the start, the
running train loss every `train.log_every_steps` steps, per-epoch metrics after each checkpoint, and
MLflow's system metrics (CPU, memory, GPU) throughout, so `mlflow ui` draws the curves as they grow.

The run's id is kept in `<out>/mlflow_run.json`, beside the checkpoint: a training resumed from the
checkpoint continues that run; a fresh one starts a new run. Runs left RUNNING by a killed training
end FAILED when the next training starts (unless it continues them). The register stage reads the
same file to link the version it registers to this run (`training_run_id`).

Once the run has started, the store is best-effort: a tracking server that stops answering mid-training
costs a warning, not the training. Metrics wait in memory (up to MAX_PENDING_METRICS) and go out when it
answers again, tried after RETRY_AFTER_S, then twice as long after each failure up to MAX_RETRY_AFTER_S (a
server that swallows requests costs the HTTP timeout per try, not per metric); a batch the server refuses
(HTTP 4xx: its metrics are not valid) is dropped. history.csv keeps every epoch whatever happens.

The project (its store) is DVC_ROOT when set: `dvc exp run --temp` / `--queue` run stages in a
temporary copy and point DVC_ROOT at the project, and name the experiment in DVC_EXP_NAME.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient

from pipeline.config import Params, flatten
from pipeline.errors import first_line
from pipeline.io import write_json
from pipeline.provenance import git_commit
from pipeline.registry.store import use_tracking_store
from pipeline.registry.transaction import OWNER_TAG, Owner
from pipeline.training.loop import EpochStats, StepStats

log = logging.getLogger(__name__)
RUN_FILE = "mlflow_run.json"
STAGE_TAG = "demoire.stage"
RUNNING_LOSS = "train_loss_running"  # the mean train loss over each `train.log_every_steps` steps
TRAINING_RUN_TAG = "training_run_id"  # on the register run and the model version: the run that trained it
SYSTEM_METRICS_INTERVAL_S = 10.0  # MLflow's default; an epoch of the quick profile takes longer
PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch call
METRICS_PER_BATCH = 1000  # and its limit of metrics per call
RETRY_AFTER_S = 60.0  # a tracking server that stopped answering is tried again after this
MAX_RETRY_AFTER_S = 1800.0  # and after twice as long each time it fails again, up to this
MAX_PENDING_METRICS = 100_000  # kept while it is away (a few MB); the oldest are dropped beyond


def project_root() -> Path:
    """The project whose store a run belongs to: DVC_ROOT under `dvc exp run --temp/--queue`, else here."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def dvc_experiment_name() -> str | None:
    """The DVC experiment this stage runs for (DVC_EXP_NAME), None outside one."""
    return os.environ.get("DVC_EXP_NAME") or None


def recorded_run_id(out: Path) -> str | None:
    """The id of the MLflow run that trained (or is training) the model in `out`; None when none is recorded."""
    try:
        return json.loads((Path(out) / RUN_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


class LiveTrainingRun:
    """The hooks `train_model` calls, logging to one MLflow run; use as a context manager that ends it.

    The run starts in `on_start`, when it is known whether a checkpoint was resumed.
    """

    def __init__(self, client: MlflowClient, experiment_id: str, out: Path, params: dict[str, str],
                 tags: dict[str, str], log_every_steps: int, system_metrics: bool = True) -> None:
        self.client, self.experiment_id, self.out = client, experiment_id, Path(out)
        self.params, self.tags, self.log_every_steps = params, tags, log_every_steps
        self.system_metrics = system_metrics
        self.run_name = f"train-{tags.get('dvc_experiment', 'workspace')}"
        self.run_id: str | None = None
        self._monitor: SystemMetricsMonitor | None = None
        self._losses: list[float] = []
        self._logged_through = 0  # the last step whose running loss the store holds (a resumed run's, else 0)
        self._pending: list[Metric] = []  # metrics not yet in the store
        self._retry_at = 0.0  # monotonic time before which a store that stopped answering is not tried
        self._retry_after = RETRY_AFTER_S

    def on_start(self, history: list[EpochStats]) -> None:
        """Continue the recorded run when a checkpoint was resumed, else start a new one; settle dead runs."""
        owner = {OWNER_TAG: str(Owner.this_process())}
        previous = recorded_run_id(self.out) if history else None
        if previous is not None and self._in_experiment(previous):
            self.run_id = previous
            self.client.update_run(previous, status=RunStatus.to_string(RunStatus.RUNNING))
            self.client.set_tag(previous, OWNER_TAG, owner[OWNER_TAG])
            # a run killed mid-epoch logged steps past its checkpoint; they are redone, to the same losses, unlogged
            self._logged_through = max((m.step for m in self.client.get_metric_history(previous, RUNNING_LOSS)),
                                       default=0)
            log.info("continuing MLflow run %s after epoch %d", previous, len(history))
        else:
            run = self.client.create_run(self.experiment_id, tags={**self.tags, **owner}, run_name=self.run_name)
            self.run_id = run.info.run_id
            items = [Param(key, value[:6000]) for key, value in self.params.items()]
            for start in range(0, len(items), PARAMS_PER_BATCH):
                self.client.log_batch(self.run_id, params=items[start:start + PARAMS_PER_BATCH])
            write_json(self.out / RUN_FILE, {"run_id": self.run_id, "experiment_id": self.experiment_id})
            log.info("MLflow run %s records this training live", self.run_id)
        settle_dead_training_runs(self.client, self.experiment_id, keep=self.run_id)
        if self.system_metrics:
            self._monitor = SystemMetricsMonitor(self.run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                                 resume_logging=previous == self.run_id)
            self._monitor.start()

    def _in_experiment(self, run_id: str) -> bool:
        """Whether `run_id` is a live run of this experiment in this store (a file from elsewhere is not)."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return False
        return run.info.experiment_id == self.experiment_id and run.info.lifecycle_stage == "active"

    def on_step(self, step: StepStats) -> None:
        """Every `log_every_steps` steps, the mean train loss over them, at the run's global step."""
        if not self.log_every_steps:
            return
        self._losses.append(step.loss)
        if len(self._losses) >= self.log_every_steps or step.step == step.steps_per_epoch:
            loss = sum(self._losses) / len(self._losses)
            self._losses.clear()
            if step.global_step > self._logged_through:
                self._log({RUNNING_LOSS: loss}, step.global_step)

    def on_epoch(self, history: list[EpochStats]) -> None:
        """The epoch's metrics, at step = epoch."""
        row = history[-1]
        self._log({"train_loss": row.train_loss, "val_loss": row.val_loss, "val_psnr": row.val_psnr,
                   "lr": row.lr, "epoch_seconds": row.seconds}, row.epoch)

    def _log(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._pending += [Metric(key, value, now, step) for key, value in values.items() if math.isfinite(value)]
        del self._pending[:-MAX_PENDING_METRICS]
        if time.monotonic() >= self._retry_at:
            self._flush()

    def _flush(self) -> bool:
        """Send the metrics waiting; on a store that does not answer, keep them and try again later."""
        while self._pending:
            try:
                self.client.log_batch(self.run_id, metrics=self._pending[:METRICS_PER_BATCH])
            except (MlflowException, OSError) as exc:
                if _refused(exc):  # it answered, and would refuse them again
                    log.warning("MLflow store refused %d metrics (%s): dropped",
                                len(self._pending[:METRICS_PER_BATCH]), _summary(exc))
                    del self._pending[:METRICS_PER_BATCH]
                    continue
                if self._retry_at == 0.0:  # once per outage
                    log.warning("MLflow store stopped answering (%s); training goes on, its metrics wait to be "
                                "logged (history.csv keeps every epoch)", _summary(exc))
                else:
                    self._retry_after = min(2 * self._retry_after, MAX_RETRY_AFTER_S)
                self._retry_at = time.monotonic() + self._retry_after
                return False
            del self._pending[:METRICS_PER_BATCH]
        if self._retry_at:
            log.info("MLflow store answers again: the metrics that waited are logged")
        self._retry_at, self._retry_after = 0.0, RETRY_AFTER_S
        return True

    def __enter__(self) -> LiveTrainingRun:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if self._monitor is not None:
            self._monitor.finish()
        if self.run_id is None:
            return
        status = RunStatus.FINISHED if exc_type is None else RunStatus.FAILED
        try:
            if self._flush():
                self.client.set_terminated(self.run_id, RunStatus.to_string(status))
                return
        except (MlflowException, OSError) as error:
            log.warning("MLflow store stopped answering (%s)", _summary(error))
        log.warning("MLflow run %s could not be ended %s (%d metrics not logged); the next training marks it "
                    "FAILED, and history.csv has every epoch", self.run_id, RunStatus.to_string(status),
                    len(self._pending))


def _refused(exc: BaseException) -> bool:
    """Whether the server answered a request with a client error (bad metrics), not a hiccup worth a retry."""
    status = exc.get_http_status_code() if isinstance(exc, MlflowException) else 500  # unreachable: INTERNAL_ERROR
    return 400 <= status < 500 and status != 429


def _summary(exc: BaseException) -> str:
    """An exception's type and first line: MLflow's HTTP errors run to many."""
    return f"{type(exc).__name__}: {first_line(str(exc))}"[:300]


def settle_dead_training_runs(client: MlflowClient, experiment_id: str, keep: str | None) -> None:
    """Training runs left RUNNING by a process that is gone end FAILED (all but `keep`, which continues)."""
    runs = client.search_runs([experiment_id], max_results=1000,
                              filter_string=f"tags.`{STAGE_TAG}` = 'train' and attributes.status = 'RUNNING'")
    for run in runs:
        owner = Owner.parse(run.data.tags.get(OWNER_TAG))
        if run.info.run_id != keep and owner is not None and owner.gone():
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
            log.warning("training run %s was left RUNNING by %s, which is gone: marked FAILED", run.info.run_id, owner)


def live_training_run(params: Params, out: Path) -> LiveTrainingRun:
    """Hooks that stream this training to the project's MLflow store (see the module doc)."""
    root = project_root()
    use_tracking_store(root, params.registration.experiment)
    client = MlflowClient()
    experiment_id = mlflow.get_experiment_by_name(params.registration.experiment).experiment_id
    tags = {STAGE_TAG: "train"}
    if dvc_experiment_name():
        tags["dvc_experiment"] = dvc_experiment_name()
    commit = git_commit(Path.cwd())
    if commit:
        tags["git_commit"] = commit
    return LiveTrainingRun(client, experiment_id, out, flatten(params), tags, params.train.log_every_steps)


def linked_training_run(client: MlflowClient, model_dir: Path) -> str | None:
    """The run that trained the model in `model_dir`, when this store has it; None (and why, logged) otherwise."""
    run_id = recorded_run_id(model_dir)
    if run_id is None:
        log.info("%s records no training run (trained before live telemetry): the registration links to none",
                 Path(model_dir) / RUN_FILE)
        return None
    try:
        client.get_run(run_id)
    except MlflowException:
        log.warning("training run %s (%s) is not in this MLflow store (trained elsewhere?): not linked",
                    run_id, Path(model_dir) / RUN_FILE)
        return None
    return run_id
