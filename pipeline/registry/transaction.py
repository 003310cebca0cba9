"""Registration as a transaction: safe when pipelines register at once, and when one is killed half-way.

Read champion → register → decide → move `champion` happens under a lock held in the registry itself
(`RegistryLock`), so every client of one store sees it: an SQLite file or a team tracking server alike.
MLflow has no lock or compare-and-set of its own, but a registered model name is unique, and creating
or renaming one is atomic in its database; the lock is a registered model `<name>.registry-lock`:

- acquire: create it (fails while another holds it), tagged with the holder and a lease that a
  heartbeat thread renews;
- a holder that died (its process gone, on this host) or whose lease ran out is broken by renaming
  its lock to a name keyed by that acquisition's token, which only one waiter can do;
- release: delete it.

Everything a registration writes is tagged so that a rerun (after `kill -9`) or a retry finishes what
was started instead of starting again (`register_run_once`): the run carries a key of its inputs, a
run whose model is logged is registered, a version whose decision is recorded gets that decision
applied, and runs left RUNNING by a dead process end FAILED.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mlflow
import psutil
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from pipeline.errors import InputDataError, ModelNotFoundError, ServiceUnavailableError
from pipeline.faults import kill_point
from pipeline.evaluation.gate import SYNTHETIC, GateKind, GateRule, GateScores, PromotionDecision, decide_promotion
from pipeline.registry.promotion import (CHALLENGER, DECIDED_TAG, Rescore, apply_decision, scores_on_gate_set,
                                         settle_interrupted_promote, standing_champion, untouched_scores,
                                         version_decision)
from pipeline.registry.store import LOCK_SUFFIX

log = logging.getLogger(__name__)
KEY_TAG = "demoire.registration_key"  # run and version tag: digest of what was registered (registration_key)
OWNER_TAG = "demoire.owner"  # run tag: the process that logged it (Owner)
MODEL_URI_TAG = "demoire.model_uri"  # run tag, set once its model is completely logged
LEASE_S = float(os.environ.get("DEMOIRE_REGISTRY_LEASE_S", 120))
LOCK_TIMEOUT_S = float(os.environ.get("DEMOIRE_REGISTRY_LOCK_TIMEOUT_S", 3600))
TOMBSTONE_TTL_S = 24 * 3600  # broken locks' names are kept this long, so a slow waiter cannot break a new lock


class RegistryBusyError(ServiceUnavailableError):
    """The registry lock stayed held by a live process for longer than the wait allows."""


def this_host() -> str:
    """This machine: its host name and boot id (host names repeat across machines: `vm`, `localhost`, a
    container image's), so a process of a teammate's machine with our host name is not taken for a gone one
    of ours (containers of one machine share its boot id: give them their own host names)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:  # not Linux: the host name alone
        return socket.gethostname()
    return f"{socket.gethostname()}/{boot}"


@dataclass(frozen=True)
class Owner:
    """A process, by host (`this_host`), pid and start time (a pid alone may be reused)."""

    host: str
    pid: int
    started: float

    @classmethod
    def this_process(cls) -> "Owner":
        return cls(this_host(), os.getpid(), psutil.Process().create_time())

    @classmethod
    def parse(cls, text: str | None) -> "Owner | None":
        try:
            host, pid, started = (text or "").rsplit(":", 2)
            return cls(host, int(pid), float(started))
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.started:.2f}"

    def gone(self) -> bool:
        """True when this process is known to have ended: it ran on this host and is no longer there."""
        if self.host not in (this_host(), socket.gethostname()):  # another machine, or this one before a reboot
            return False  # (a bare host name: written before owners carried the boot id, taken as ours as then)
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) > 1.0
        except psutil.NoSuchProcess:
            return True


class RegistryLock:
    """Mutual exclusion over one registered model's registrations and promotions (see the module doc)."""

    def __init__(self, client: MlflowClient, model_name: str, lease_s: float = LEASE_S,
                 timeout_s: float = LOCK_TIMEOUT_S):
        self.client, self.model_name, self.lease_s, self.timeout_s = client, model_name, lease_s, timeout_s
        self.name = f"{model_name}{LOCK_SUFFIX}"
        self.token = uuid.uuid4().hex
        self.owner = Owner.this_process()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.lost = False

    def _tags(self) -> dict[str, str]:
        return {"token": self.token, "owner": str(self.owner), "expires": f"{time.time() + self.lease_s:.3f}"}

    def acquire(self) -> None:
        deadline, attempt = time.monotonic() + self.timeout_s, 0
        while True:
            try:
                self.client.create_registered_model(
                    self.name, tags=self._tags(),
                    description=f"lock: {self.model_name} is being registered or promoted by {self.owner}")
                break
            except MlflowException as exc:
                # "does not exist": MLflow's store found the lock taken, then looked it up to report it, and
                # its holder had released it in between (seen on SQLite with three registering processes)
                if exc.error_code not in (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)):
                    raise
            holder = self._holder()
            if holder is not None and self._stale(holder):
                self._break(holder)
                continue
            if time.monotonic() > deadline:
                who = holder.get("owner", "?") if holder else "?"
                raise RegistryBusyError(f"the registry lock {self.name} is held by {who} for longer than "
                                        f"{self.timeout_s:.0f} s (DEMOIRE_REGISTRY_LOCK_TIMEOUT_S); is a registration hung?")
            if attempt == 0:  # once: a promote behind an hour-long registration would otherwise wait in silence
                log.warning("waiting for the registry lock of %s, held by %s (a registration, promote or rollback)",
                            self.model_name, holder.get("owner", "?") if holder else "?")
            # back off to a few seconds between polls, so that waiters do not crowd a busy tracking server
            # that the holder's heartbeat needs
            time.sleep(random.uniform(0.5, 1.0) * min(4.0, 0.4 * 1.5 ** attempt))
            attempt += 1
        self._heartbeat = threading.Thread(target=self._renew, name="registry-lock-heartbeat", daemon=True)
        self._heartbeat.start()
        self._clean_tombstones()

    def _holder(self) -> dict[str, str] | None:
        try:
            return dict(self.client.get_registered_model(self.name).tags)
        except MlflowException as exc:
            if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                return None
            raise

    @staticmethod
    def _stale(holder: dict[str, str]) -> bool:
        owner = Owner.parse(holder.get("owner"))
        try:
            expired = float(holder.get("expires", "0")) < time.time()
        except ValueError:
            expired = True
        return expired or (owner is not None and owner.gone())

    def _break(self, holder: dict[str, str]) -> None:
        """Rename the stale lock to a name keyed by its token: of several waiters, one succeeds."""
        tombstone = f"{self.name}.stale.{holder.get('token', 'unknown')}"
        try:
            self.client.rename_registered_model(self.name, tombstone)
        except MlflowException:
            return  # another waiter broke it first (or its holder released it)
        log.warning("broke the registry lock of %s, whose holder %s is gone or let its lease run out",
                    self.model_name, holder.get("owner"))

    def _clean_tombstones(self) -> None:
        try:
            stale = self.client.search_registered_models(f"name LIKE '{self.name}.stale.%'")
            for model in stale:
                if model.last_updated_timestamp / 1000 < time.time() - TOMBSTONE_TTL_S:
                    self.client.delete_registered_model(model.name)
        except MlflowException as exc:
            log.debug("could not clean old registry lock names: %s", exc)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                holder = self._holder()
                if holder is None or holder.get("token") != self.token:
                    self.lost = True
                    return
                self.client.set_registered_model_tag(self.name, "expires", f"{time.time() + self.lease_s:.3f}")
            except Exception as exc:  # a transient store error: the next beat tries again
                log.warning("registry lock heartbeat failed: %s", exc)

    def check(self) -> None:
        """Raise if the lock was lost (its lease ran out while this process was stalled); call before writing."""
        holder = self._holder()
        if self.lost or holder is None or holder.get("token") != self.token:
            self.lost = True
            raise RegistryBusyError(f"lost the registry lock {self.name} (lease {self.lease_s:.0f} s ran out); "
                                    "run the stage or command again to finish what it started")

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=10)
        try:
            holder = self._holder()
            if holder is not None and holder.get("token") == self.token:
                self.client.delete_registered_model(self.name)
        except MlflowException as exc:  # the lease will let others in
            log.warning("could not release the registry lock %s: %s", self.name, exc)

    def __enter__(self) -> "RegistryLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def registration_key(model_dir: Path, evaluation: dict, params: dict[str, str]) -> str:
    """Digest of what a registration registers: the model files, its metrics, every param and the library
    code the logged model carries. The same inputs register one version, however often they are run."""
    import pipeline

    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("model.*")):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    digest.update(json.dumps(evaluation, sort_keys=True, default=str).encode())
    digest.update(json.dumps(params, sort_keys=True).encode())
    package = Path(pipeline.__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def register_version(client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict) -> str:
    """The version of run `run_id`'s model: created (with `tags`, atomically) unless the run already has one."""
    existing = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if existing:
        return str(min(int(v.version) for v in existing))
    return str(mlflow.register_model(model_uri, name, tags={key: str(value) for key, value in tags.items()}).version)


def settle_version(client: MlflowClient, name: str, version: str, rule: GateRule, rescore: Rescore | None,
                   kind: GateKind, source: str, lock: RegistryLock) -> PromotionDecision:
    """Decide on `version` exactly once: a recorded decision is (re-)applied, else one is made against `champion`."""
    recorded = version_decision(client, name, version)
    tags = client.get_model_version(name, version).tags
    if recorded is not None and DECIDED_TAG in tags:
        return recorded
    if DECIDED_TAG in tags:
        raise InputDataError(f"{name} v{version} is marked {tags[DECIDED_TAG]} without a recorded decision; "
                             "it was decided by an older version of this pipeline and is left as it is")
    latest = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    if int(version) >= latest:  # a later registration owns `challenger` now
        client.set_registered_model_alias(name, CHALLENGER, version)
    decision = recorded or _decide(client, name, version, tags, rule, rescore, kind)
    lock.check()
    apply_decision(client, name, decision, source)
    log.info("%s v%s: %s", name, version, decision.reason)
    return decision


def _decide(client: MlflowClient, name: str, version: str, tags: dict, rule: GateRule, rescore: Rescore | None,
            kind: GateKind) -> PromotionDecision:
    gate_set = tags[kind.set_tag]
    challenger = GateScores.from_means(version, {m: float(tags[f"{kind.prefix}_{m}"]) for m in kind.metrics},
                                       gate_set, kind)
    champion = standing_champion(client, name)
    champion_scores = scores_on_gate_set(client, name, champion, gate_set, rescore, kind) if champion else None
    return decide_promotion(challenger, champion_scores, rule, untouched_scores(client, name, version, gate_set, kind))


def settle_abandoned(client: MlflowClient, name: str, experiment_id: str, rule: GateRule, kind: GateKind,
                     local_gate_set: str, rescore: Rescore | None, lock: RegistryLock, keep: str) -> None:
    """Under the lock, finish what dead registrations left: their RUNNING runs end FAILED, and versions
    without a decision are decided in registration order (re-scoring the champion only on this checkout's
    gate set; a version that cannot be compared is decided `not_promoted`, saying why)."""
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000):
        owner = Owner.parse(run.data.tags.get(OWNER_TAG))
        if owner is not None and owner.gone() and run.data.tags.get(KEY_TAG) != keep:
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
            log.warning("run %s was left RUNNING by %s, which is gone: marked FAILED", run.info.run_id, owner)
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    for version in versions:
        if DECIDED_TAG in version.tags or version.tags.get(KEY_TAG) == keep:
            continue
        if kind.set_tag not in version.tags:  # registered by hand or by another gate kind: not ours to decide
            continue
        number = str(version.version)
        try:
            usable = rescore if version.tags[kind.set_tag] == local_gate_set else None
            settle_version(client, name, number, rule, usable, kind, "abandoned registration", lock)
        except (InputDataError, ModelNotFoundError, KeyError, ValueError) as exc:  # its files gone, say
            reason = f"its registering process died before deciding, and it cannot be compared here: {exc}"
            client.set_model_version_tag(name, number, "promotion_reason", reason)
            client.set_model_version_tag(name, number, DECIDED_TAG, "not_promoted")
            log.warning("%s v%s: %s", name, number, reason)


LogRun = Callable[[dict[str, str]], tuple[str, str]]
"""Logs the MLflow run with these extra run tags and ends it; returns (run id, logged model URI)."""


def register_run_once(client: MlflowClient, name: str, experiment_id: str, key: str, log_run: LogRun,
                      version_tags: dict, rule: GateRule, rescore: Rescore | None, kind: GateKind = SYNTHETIC,
                      ) -> tuple[str, str, PromotionDecision]:
    """Log, register and decide one pipeline run's model, once; return (version, run id, decision).

    Under the registry lock: what dead registrations left is settled first, then a previous attempt with
    the same `key` is found and finished (its version, else its logged model, else a new run is logged).
    """
    with RegistryLock(client, name) as lock:
        settle_interrupted_promote(client, name)  # before a decision can move champion
        settle_abandoned(client, name, experiment_id, rule, kind, version_tags[kind.set_tag], rescore, lock, key)
        run_id, model_uri = _previous_attempt(client, name, experiment_id, key)
        if model_uri is None:
            run_id, model_uri = log_run({KEY_TAG: key, OWNER_TAG: str(Owner.this_process())})
        lock.check()
        version = register_version(client, name, model_uri, run_id, {**version_tags, KEY_TAG: key})
        kill_point("register.version_created")
        decision = settle_version(client, name, version, rule, rescore, kind, f"run {run_id}", lock)
    return version, run_id, decision


def _previous_attempt(client: MlflowClient, name: str, experiment_id: str, key: str) -> tuple[str | None, str | None]:
    """(run id, model URI) of an earlier attempt with this key whose model was logged; runs of attempts killed
    before that are marked FAILED. (None, None) when there is none."""
    found: tuple[str | None, str | None] = (None, None)
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'",
                              order_by=["attributes.start_time ASC"], max_results=1000)
    for run in runs:
        model_uri = run.data.tags.get(MODEL_URI_TAG)
        if model_uri and found[1] is None:
            found = (run.info.run_id, model_uri)
            if run.info.status == "RUNNING":  # killed between logging the model and ending the run
                client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))
        elif run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
            log.warning("run %s of an earlier, killed attempt marked FAILED", run.info.run_id)
    if found[0] is not None:
        versions = client.search_model_versions(f"name='{name}' and run_id='{found[0]}'")
        if versions and DECIDED_TAG in versions[0].tags:  # a finished registration of the same inputs
            log.info("already registered by run %s as v%s, and decided then", found[0], versions[0].version)
        else:
            log.info("finishing the earlier attempt: run %s%s", found[0],
                     f", v{versions[0].version}" if versions else " (its model was logged, not registered)")
    return found
