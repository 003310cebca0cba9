"""Registering a version and gating `champion`: the gate's scores on versions, the decision, champion history."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from pipeline.data.splits import in_train_share
from pipeline.errors import DemoireError, InputDataError, ModelNotFoundError, ServiceUnavailableError, first_line
from pipeline.faults import kill_point
from pipeline.models import load_model
from pipeline.evaluation.gate import (GATE_KINDS, METRIC_LABELS, SYNTHETIC, GateKind, GateRule, GateScores,
                                     PromotionDecision, decide_promotion)
from pipeline.registry.pyfunc import download_model_files
from pipeline.registry.store import alias_version, redacted, resolve_alias, transient_store_error, version_numbers
from pipeline.sources import SOURCE_ID_PREFIXES

if TYPE_CHECKING:  # transaction imports this module
    from pipeline.registry.transaction import RegistryLock

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
GATE_SET_TAG = SYNTHETIC.set_tag  # version tag: hash of the test split its test_* metrics were computed on
GATE_KIND_TAG = "gate.kind"  # version tag: which gate decided, `synthetic` (test split) or `real` (real sets)
CHAMPION_HISTORY_TAG = "champion_history"  # registered-model tag: JSON list of champion versions, oldest first
MAX_HISTORY = 200  # versions kept in the history; MLflow tag values hold at most 5000 characters
Rescore = Callable[[Path], dict[str, float]]  # model folder (model.pt + model.json) → the gate kind's metrics on the gate set
# Version tags of the decision, written in this order: the decision itself (JSON, before anything moves),
# the comparison, `champion`, and last `promotion`, which marks the version decided. A registration
# killed half-way is finished from the first of them instead of being decided again.
DECISION_TAG = "promotion.decision"
DECIDED_TAG = "promotion"
# Version tag: the decisions a later `demoire promote` made on the version, oldest first (JSON list). They go here,
# not over the registration's tags above, which resume, reports and `version_decision` read as the registration's.
PROMOTE_HISTORY_TAG = "promote.history"
# Registered-model tag: the promote-history entry (a JSON list of one) of a promote while it moves `champion`, written
# before the move and removed once the entry is in the version's history. A promote that died in between leaves it,
# and the next holder of the registry lock settles it (`settle_interrupted_promote`) before anything moves champion.
PENDING_PROMOTE_TAG = "promote.pending"
FINISHED_BY_PROMOTE = "its registration, finished by demoire promote"  # the description's source then
TAG_VALUE_LIMIT = 5000  # characters a tag value holds on older MLflow servers and their databases (newer allow more)


def flat_metrics(evaluation: dict) -> dict[str, float]:
    """The evaluate stage's metrics.json as MLflow metric names: `test_<metric>` for the test split,
    `real_<set>_<metric>` per real set and `real_<metric>` for the means over sets; nulls left out."""
    def numbers(prefix: str, mapping: dict) -> dict[str, float]:
        return {f"{prefix}{key}": float(value) for key, value in mapping.items()
                if isinstance(value, (int, float)) and not isinstance(value, bool)}

    flat = numbers("test_", evaluation)
    for name, summary in evaluation.get("real", {}).items():
        flat |= numbers(f"real_{name}_", summary)
    return flat | numbers("real_", evaluation.get("real_mean", {}))


def register_and_gate(
    client: MlflowClient,
    name: str,
    model_uri: str,
    run_id: str,
    metrics: dict[str, float],
    tags: dict[str, str],
    rule: GateRule,
    rescore: Rescore | None = None,
    kind: GateKind = SYNTHETIC,
) -> tuple[str, PromotionDecision]:
    """Register the model of run `run_id` as `challenger` tagged with its metrics and `tags`, and gate `champion`.

    `metrics` must hold the gate kind's means (`test_psnr`, … or `real_psnr`, `real_tone_psnr`, …) and
    `tags` its gate set tag (`gate_set` or `real_gate_set`), the hash of the set they were computed on.
    A champion scored on another gate set is re-scored on this one with `rescore` first. It holds the
    registry lock throughout, and is idempotent: called again for the same run (a retry) it finishes
    that run's version instead of registering another.
    """
    from pipeline.registry.transaction import RegistryLock, register_version, settle_version

    with RegistryLock(client, name) as lock:
        settle_interrupted_promote(client, name)  # before a decision can move champion
        version = register_version(client, name, model_uri, run_id, {**metrics, **tags})
        decision = settle_version(client, name, version, rule, rescore, kind, f"run {run_id}", lock)
    return version, decision


def version_decision(client: MlflowClient, name: str, version: str) -> PromotionDecision | None:
    """The decision recorded on a version (also one not yet fully applied), None before any."""
    recorded = client.get_model_version(name, version).tags.get(DECISION_TAG)
    return decision_from_record(json.loads(recorded)) if recorded else None


def decision_from_record(record: dict) -> PromotionDecision:
    """A PromotionDecision back from its `record()`."""
    champion = record["champion"]
    untouched = record.get("untouched")  # absent from decisions recorded before the floor
    return PromotionDecision(record["promote"], record["reason"], GateScores(**record["challenger"]),
                             GateScores(**champion) if champion else None,
                             GateRule(record["margin_db"], record["ssim_tolerance"], record.get("over_input", True)),
                             GateScores(**untouched) if untouched else None)


def compare_challenger(
    client: MlflowClient, name: str, rule: GateRule, local_gate: Callable[[], tuple[str, Rescore]],
    kind: GateKind = SYNTHETIC, allow_rolled_back: bool = False, downloads: ModelDownloads | None = None,
) -> PromotionDecision:
    """Decide on `challenger` vs `champion` on one gate set of `kind`: the one both were scored on, else the
    local one (the test split, or the real sets of params.yaml).

    `local_gate` is only called when the recorded scores are not comparable; it returns the local
    gate set's hash and a function scoring a model folder on it. A challenger `demoire rollback` took `champion`
    from is not promoted again unless `allow_rolled_back`: its scores beat the champion's before, and it was
    rolled back all the same. Re-scoring downloads the versions into `downloads` when given (kept for
    `apply_promote`'s check that the challenger loads), else into a temporary folder each.
    """
    challenger = resolve_alias(name, CHALLENGER)
    champion = standing_champion(client, name)
    ours = recorded_scores(client, name, challenger, kind)
    theirs = recorded_scores(client, name, champion, kind) if champion else None
    inputs: dict[str, float] = {}  # what re-scoring on the local gate set found of the untouched input
    if ours is None or not (champion is None or (theirs is not None and theirs.gate_set == ours.gate_set)):
        gate_set, rescore = local_gate()

        def scoring(model_dir: Path) -> dict[str, float]:
            scores = rescore(model_dir)
            inputs.update(scores)
            return scores

        ours = scores_on_gate_set(client, name, challenger, gate_set, scoring, kind, downloads)
        if champion is None or champion == challenger:  # already champion: the same scores, not scored twice
            theirs = ours if champion else None
        else:
            theirs = scores_on_gate_set(client, name, champion, gate_set, scoring, kind, downloads)
    untouched = untouched_scores(client, name, challenger, ours.gate_set, kind) or _input_means(inputs, ours, kind)
    if untouched is None and rule.over_input:
        log.warning("the untouched input's scores on gate set %s are not recorded with v%s (registered before "
                    "they were); the gate's floor over the input is not applied", ours.gate_set[:12], challenger)
    decision = decide_promotion(ours, theirs, rule, untouched)
    rolled_back = client.get_model_version(name, challenger).tags.get(ROLLED_BACK_TAG)
    if decision.promote and rolled_back and not allow_rolled_back:
        return replace(decision, promote=False, reason=f"v{challenger} was rolled back ({rolled_back}) and stays out "
                       f"unless promoted with --allow-rolled-back; the gate alone says: {decision.reason}")
    return decision


def _input_means(scores: dict[str, float], challenger: GateScores, kind: GateKind) -> GateScores | None:
    """The untouched input's scores among a re-scoring's (`identity_…`), None when it gave none."""
    try:
        means = {metric: float(scores[f"identity_{metric}"]) for metric in kind.metrics}
    except KeyError:
        return None
    return GateScores.from_means("input", means, challenger.gate_set, kind, rescored=True)


def recorded_scores(client: MlflowClient, name: str, version: str, kind: GateKind = SYNTHETIC) -> GateScores | None:
    """A version's scores on a gate set of `kind` as tagged at registration; None if it lacks the set or a metric."""
    tags = client.get_model_version(name, version).tags
    try:
        means = {metric: float(tags[f"{kind.prefix}_{metric}"]) for metric in kind.metrics}
    except (KeyError, ValueError):
        return None
    gate_set = tags.get(kind.set_tag)
    return GateScores.from_means(version, means, gate_set, kind) if gate_set else None


def untouched_scores(client: MlflowClient, name: str, version: str, gate_set: str,
                     kind: GateKind = SYNTHETIC) -> GateScores | None:
    """The untouched input's means on `gate_set` (the `identity` scores recorded with a version scored there);
    None when the version was scored elsewhere or lacks them (registered by hand, or before they were recorded)."""
    tags = client.get_model_version(name, version).tags
    if tags.get(kind.set_tag) != gate_set:
        return None
    try:
        means = {metric: float(tags[f"{kind.prefix}_identity_{metric}"]) for metric in kind.metrics}
    except (KeyError, ValueError):
        return None
    return GateScores.from_means("input", means, gate_set, kind)


def scores_on_gate_set(
    client: MlflowClient, name: str, version: str, gate_set: str, rescore: Rescore | None, kind: GateKind = SYNTHETIC,
    downloads: ModelDownloads | None = None,
) -> GateScores:
    """A version's scores on `gate_set`: as recorded when it was scored on it, else re-scored with `rescore` (on its
    files in `downloads` when given)."""
    recorded = recorded_scores(client, name, version, kind)
    if recorded is not None and recorded.gate_set == gate_set:
        return recorded
    if rescore is None:
        needs = "the test split (`dvc repro` writes it)" if kind is SYNTHETIC else "the real sets of evaluate.real_sets"
        raise InputDataError(f"{name} v{version} was scored on another gate set than {gate_set[:12]}; "
                             f"re-scoring it needs {needs}")
    with _using(downloads) as files:
        folder = files.folder(name, version)
        try:
            scores = rescore(folder)
        except ServiceUnavailableError:
            raise
        except DemoireError as exc:  # named by its URI: the temporary folder is gone by the time it is read
            raise type(exc)(files.named(str(exc), name, version)) from None
    was = f"gate set {recorded.gate_set[:12]}" if recorded is not None else "no gate set of this kind"
    shown = ", ".join(f"{metric} {float(scores[metric]):.4g}" for metric in kind.metrics if metric in scores)
    log.info("%s v%s was scored on %s: re-scored on this one, %s (%s): %s", name, version, was, gate_set[:12],
             kind.label, shown)
    return GateScores.from_means(version, scores, gate_set, kind, rescored=True)


def champion_trained_on(client: MlflowClient, name: str, test_source_ids: Iterable[str]) -> str | None:
    """A warning when the champion's split fractions (its registration run's params) put some of these test split
    sources in its train split, so that its figures re-scored on them would run high; None when they did not, or
    when its fractions are not known."""
    try:  # no registered model yet, no champion, a store that does not answer: nothing to say
        champion = standing_champion(client, name)
        if champion is None:
            return None
        logged = client.get_run(client.get_model_version(name, champion).run_id).data.params
        test_fraction = float(logged["preprocess.test_fraction"])
        val_fraction = float(logged["preprocess.val_fraction"])
    except Exception:  # noqa: BLE001  (a warning's lookup never fails a registration or a promote)
        return None
    synthetic = {str(source) for source in test_source_ids if str(source).startswith(SOURCE_ID_PREFIXES)}
    trained = in_train_share(synthetic, val_fraction, test_fraction)
    if not trained:
        return None
    return (f"champion v{champion} was trained with preprocess.test_fraction {test_fraction:g} and val_fraction "
            f"{val_fraction:g}: {len(trained)} of this test split's {len(synthetic)} source images (first: "
            f"{trained[0]}) were in its train split, so its figures re-scored on them may run high; keep its "
            "fractions, or gate on real sets (evaluate.real_sets)")


def _downloaded(name: str, version: str, folder: Path) -> Path:
    """A version's model files (model.pt, model.json) in `folder`; one line when its artifacts are gone, and a
    ServiceUnavailableError (which the register stage retries) when the store did not answer."""
    try:
        return download_model_files(f"models:/{name}/{version}", folder)
    except (MlflowException, OSError) as exc:
        detail = f"{type(exc).__name__}: {first_line(str(exc))}"
        if transient_store_error(exc):
            raise ServiceUnavailableError(f"{name} v{version}: the artifact store did not answer ({detail})") from None
        raise ModelNotFoundError(f"{name} v{version}: its model files cannot be read ({detail})") from None


class ModelDownloads:
    """Versions' model files, each downloaded once into one temporary folder that `close` removes: a promote that
    re-scores the challenger checks that it loads from the same download."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name)
        self._folders: dict[tuple[str, str], Path] = {}
        self._destinations: dict[tuple[str, str], Path] = {}

    def folder(self, name: str, version: str) -> Path:
        """The version's model folder (model.pt, model.json), downloaded on first use."""
        key = (name, version)
        if key not in self._folders:
            self._folders[key] = _downloaded(name, version, self._destination(key))
        return self._folders[key]

    def _destination(self, key: tuple[str, str]) -> Path:
        # numbered, not named: a model name may hold characters a folder name cannot
        return self._destinations.setdefault(key, self.root / str(len(self._destinations)))

    def named(self, text: str, name: str, version: str) -> str:
        """`text` with the version's files named by its URI, not by a temporary folder gone by the time it is read."""
        files = str(self._destination((name, version)) / "files")
        return text.replace(files, f"models:/{name}/{version}").replace(str(self.root), "…")

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> "ModelDownloads":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@contextmanager
def _using(downloads: ModelDownloads | None) -> Iterator[ModelDownloads]:
    """`downloads`, or (None) a new one removed on exit."""
    if downloads is not None:
        yield downloads
        return
    with ModelDownloads() as fresh:
        yield fresh


def check_loadable(name: str, version: str, task: str, downloads: ModelDownloads | None = None) -> None:
    """Refuse `task` (moving `champion` to `version`) unless the version's model loads: an alias on a version
    whose artifacts are gone would break every `models:/…@champion` user. Files already in `downloads` are used."""
    with _using(downloads) as files:
        try:
            load_model(files.folder(name, version))
        except ServiceUnavailableError:
            raise
        except DemoireError as exc:
            raise ModelNotFoundError(f"{task} refused: {files.named(str(exc), name, version)}") from None


def apply_decision(client: MlflowClient, name: str, decision: PromotionDecision, source: str,
                   downloads: ModelDownloads | None = None, moves_champion: bool = True) -> None:
    """Write the comparison and decision on the challenger version; move `champion` if it won (and loads), unless
    not `moves_champion` (a later promote's decision has taken over the alias).

    The registration's record of a version, written once (`settle_version`); a later `demoire promote` records
    its decisions with `apply_promote` instead.
    """
    version, champion = decision.challenger.version, decision.champion
    moving = decision.promote and moves_champion
    if moving:  # before anything is written: a refusal leaves the version undecided, as it was
        check_loadable(name, version, f"moving champion to v{version}", downloads)
    client.set_model_version_tag(name, version, DECISION_TAG, json.dumps(decision.record()))
    kill_point("register.decision_recorded")
    tags = {
        "promotion_reason": decision.reason,
        GATE_KIND_TAG: decision.challenger.kind,
        "gate.gate_set": decision.challenger.gate_set,
        "gate.margin_db": decision.rule.margin_db,
        "gate.ssim_tolerance": decision.rule.ssim_tolerance,
        "gate.challenger_rescored": decision.challenger.rescored,
        **{f"gate.challenger_{m}": value for m, value in decision.challenger.means().items()},
    }
    if champion is not None:
        tags |= {"gate.champion_version": champion.version, "gate.champion_rescored": champion.rescored,
                 **{f"gate.champion_{m}": value for m, value in champion.means().items()}}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
    client.update_model_version(name, version, description=comparison_markdown(decision, source))
    if moving:
        move_champion(client, name, version)
        kill_point("register.champion_moved")
    client.set_model_version_tag(name, version, DECIDED_TAG, "promoted" if decision.promote else "not_promoted")


def apply_promote(client: MlflowClient, name: str, decision: PromotionDecision, source: str,
                  downloads: ModelDownloads | None = None, lock: RegistryLock | None = None) -> None:
    """Apply a decision `demoire promote` made after the registration: move `champion` if it won (and loads), and
    append it to the version's promote history. The registration's decision tags and description stay as recorded;
    a version without any (registered by hand) gets them from this decision, its first, and one its registration
    recorded and died before applying is finished first (`_finish_registration`). With `lock`, checks that
    it is still held before writing anything and again right before moving champion."""
    version = decision.challenger.version
    if decision.promote:  # before anything is written: a refused promote leaves the version as it was
        check_loadable(name, version, f"moving champion to v{version}", downloads)
    _check(lock)  # a re-score that outlived the lease may have let a registration take the lock
    tags = client.get_model_version(name, version).tags
    # registered by hand, no registration will decide it (an empty decision tag is none, as `version_decision` reads)
    by_hand = DECIDED_TAG not in tags and not tags.get(DECISION_TAG)
    if not by_hand:
        _finish_registration(client, name, version, tags)
    with _recorded_promote(client, name, decision, source):
        if decision.promote:
            _check(lock)  # again right before the move: the writes since may have waited out the lease
            move_champion(client, name, version)
            kill_point("promote.champion_moved")
        if by_hand:  # after the move: a promote that dies before it leaves no decision a registration would finish
            apply_decision(client, name, decision, source, moves_champion=False)  # loaded above, not again


def _check(lock: RegistryLock | None) -> None:
    """Raise if `lock` (when given) was lost."""
    if lock is not None:
        lock.check()


def _finish_registration(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    """Finish the record of a registration that recorded its decision on `version` and died before applying it, so
    that no rerun of the stage re-applies it (this promote's decision stands instead). A recorded promote whose move
    never happened is recorded as not promoted, saying so, even when this promote moves champion there: its entry in
    the promote history says that, and the record is final before anything moves."""
    if DECIDED_TAG in tags:
        return
    recorded = version_decision(client, name, version)
    if recorded.promote and not _was_champion(client, name, version, tags):
        recorded = replace(recorded, promote=False, reason=f"its registration died before moving champion to "
                           f"v{version}, and `demoire promote` decided instead; the registration's gate said: "
                           f"{recorded.reason}")
    apply_decision(client, name, recorded, FINISHED_BY_PROMOTE, moves_champion=False)


def _was_champion(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> bool:
    """Whether `version` held `champion` (a registration killed after moving it, then rolled back, say)."""
    return ROLLED_BACK_TAG in tags or version in champion_history(client, name)


@contextmanager
def _recorded_promote(client: MlflowClient, name: str, decision: PromotionDecision, source: str) -> Iterator[None]:
    """Append a later promote's decision to its version's promote history once the block has applied it. One that
    moves `champion` is first recorded as pending on the registered model: if the block fails or the process dies,
    the next holder of the registry lock finishes the record (`settle_interrupted_promote`)."""
    version = decision.challenger.version
    entry = promote_entry(decision, source)
    if decision.promote:  # bounded as the history will hold it, so that the settle can tell it is there already
        client.set_registered_model_tag(name, PENDING_PROMOTE_TAG, bounded_json([entry]))
        kill_point("promote.pending_recorded")
    yield
    append_promote_entry(client, name, version, entry)
    if decision.promote:
        client.delete_registered_model_tag(name, PENDING_PROMOTE_TAG)


def settle_interrupted_promote(client: MlflowClient, name: str) -> None:
    """Finish the record of a promote that failed or died while moving `champion`: its entry goes to the version's
    promote history if the version holds champion (the move happened), and is dropped if not. Each holder of the
    registry lock calls this before it can move champion, so nothing has moved it since."""
    try:
        pending = client.get_registered_model(name).tags.get(PENDING_PROMOTE_TAG)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):  # its first registration is yet to come
            return
        raise
    if pending is None:
        return
    try:
        entry = json.loads(pending)[0]
        version = str(entry["challenger"]["version"])
    except (ValueError, LookupError, TypeError):  # edited by hand: nothing to finish
        log.warning("%s: its %s tag is not a promote's entry; it is removed", name, PENDING_PROMOTE_TAG)
    else:
        if alias_version(client, name, CHAMPION) == version:
            if promote_history(client, name, version)[-1:] != [entry]:  # not appended before the promote died
                append_promote_entry(client, name, version, entry)
            log.warning("%s v%s: the promote that moved champion to it stopped before recording that; recorded now",
                        name, version)
        else:
            log.warning("%s: a promote of v%s stopped before moving champion; its decision is dropped", name, version)
    client.delete_registered_model_tag(name, PENDING_PROMOTE_TAG)


def promote_history(client: MlflowClient, name: str, version: str) -> list[dict]:
    """The decisions later promotes made on a version (`decision.record()` with `at` and `source`), oldest first."""
    return promote_entries(client.get_model_version(name, version).tags, f"{name} v{version}")


def promote_entries(tags: dict[str, str], label: str) -> list[dict]:
    """The promote history in a version's `tags`, oldest first; [] when it is absent or not a JSON list."""
    try:
        history = json.loads(tags.get(PROMOTE_HISTORY_TAG, "[]"))
    except ValueError:  # edited by hand: started afresh rather than refusing every promote
        log.warning("%s: its %s tag is not JSON; it starts afresh", label, PROMOTE_HISTORY_TAG)
        return []
    return history if isinstance(history, list) else []


def promote_entry(decision: PromotionDecision, source: str) -> dict:
    """A promote history entry: the decision's record with when (UTC) and by what it was made."""
    return {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "source": source, **decision.record()}


def append_promote_entry(client: MlflowClient, name: str, version: str, entry: dict) -> None:
    """Append `entry` to a version's promote history; the oldest entries go when it outgrows a tag."""
    history = promote_history(client, name, version)
    client.set_model_version_tag(name, version, PROMOTE_HISTORY_TAG, bounded_json(history + [entry]))


def bounded_json(entries: list[dict], limit: int = TAG_VALUE_LIMIT) -> str:
    """JSON of the newest `entries` that fit in `limit` characters, dropping the oldest first; the newest alone over
    it keeps a shortened `reason` (the one field without a bound)."""
    kept = list(entries)
    while len(kept) > 1 and len(json.dumps(kept)) > limit:
        kept.pop(0)
    excess = len(json.dumps(kept)) - limit
    if excess > 0:  # json.dumps writes "…" as 6 characters, and no character of the reason as fewer than 1
        reason = kept[-1]["reason"]
        kept[-1] = {**kept[-1], "reason": reason[:max(0, len(reason) - excess - 6)] + "…"}
    return json.dumps(kept)


def comparison_markdown(decision: PromotionDecision, source: str) -> str:
    """The version description: decision, rule and both models' scores on the gate set."""
    challenger, champion = decision.challenger, decision.champion
    kind = GATE_KINDS[challenger.kind]
    verdict = "promoted to champion" if decision.promote else "not promoted"
    margins = " and ".join(METRIC_LABELS[m] for m in kind.margin_metrics)
    lines = [f"{source}: {verdict}: {decision.reason}", "",
             f"Gate set {challenger.gate_set} ({kind.label}; gate.kind {kind.name}); margin "
             f"{decision.rule.margin_db:g} dB {margins}, SSIM tolerance {decision.rule.ssim_tolerance:g}.", ""]
    if champion is None:
        return "\n".join(lines + [f"v{challenger.version}: " + ", ".join(
            f"{m} {value:.6g}" for m, value in challenger.means().items())])
    lines += [f"| metric | challenger v{challenger.version} | champion v{champion.version} |", "|---|---|---|"]
    lines += [f"| {m} | {value:.6g} | {getattr(champion, m):.6g} |" for m, value in challenger.means().items()]
    rescored = [f"v{s.version}" for s in (challenger, champion) if s.rescored]
    if rescored:
        lines += ["", f"Re-scored on this gate set: {', '.join(rescored)}."]
    return "\n".join(lines)


def champion_history(client: MlflowClient, name: str) -> list[str]:
    """Versions that held `champion`, oldest first, ending with the current one (even if moved by hand)."""
    model = client.get_registered_model(name)
    history = [str(v) for v in json.loads(model.tags.get(CHAMPION_HISTORY_TAG, "[]"))]
    current = alias_version(client, name, CHAMPION)
    if current is not None and history[-1:] != [current]:
        history.append(current)
    return history


def _write_history(client: MlflowClient, name: str, history: list[str]) -> None:
    """Store the champion history; the oldest entries go first, since tag values are limited to 5000 chars."""
    client.set_registered_model_tag(name, CHAMPION_HISTORY_TAG, json.dumps(history[-MAX_HISTORY:]))


ROLLED_BACK_TAG = "rolled_back"  # on a version `demoire rollback` took `champion` from, until it is champion again


def move_champion(client: MlflowClient, name: str, version: str) -> None:
    """Point `champion` at `version` and append it to the champion history; again, it changes nothing."""
    stored = client.get_registered_model(name).tags.get(CHAMPION_HISTORY_TAG)
    history = champion_history(client, name)
    if history[-1:] != [version]:
        history.append(version)
    client.set_registered_model_alias(name, CHAMPION, version)
    if stored != json.dumps(history[-MAX_HISTORY:]):
        _write_history(client, name, history)
    if ROLLED_BACK_TAG in client.get_model_version(name, version).tags:  # champion again: no longer rolled back
        client.delete_model_version_tag(name, version, ROLLED_BACK_TAG)


def standing_champion(client: MlflowClient, name: str) -> str | None:
    """The version behind `champion`; with the alias gone because its version was deleted, the last champion of the
    history that still exists (a challenger is compared with it, not promoted as if there had never been one)."""
    current = alias_version(client, name, CHAMPION)
    if current is not None:
        return current
    existing = set(version_numbers(client, name))
    standing = next((v for v in reversed(champion_history(client, name)) if v in existing), None)
    if standing is not None:
        log.warning("%s has no champion alias (its version was deleted?); v%s, the last champion that exists, "
                    "stands for it; `demoire rollback` puts the alias back on it", name, standing)
    return standing


def rollback_champion(client: MlflowClient, name: str) -> tuple[str | None, str]:
    """Move `champion` back to the previous champion that still exists; return (demoted, restored) versions.

    Without the alias (its version was deleted, or it was removed by hand) the alias is put back on the last
    champion that exists; demoted is then the deleted one, or None. Written so that a rollback killed half-way
    is finished by running it again: the demoted version is tagged and the history shortened first, the alias
    moved last (until then the history still ends with the demoted one).
    """
    try:
        client.get_registered_model(name)
    except MlflowException:
        resolve_alias(name, CHAMPION)  # no such model: the error lists those there are
    history = champion_history(client, name)
    existing = set(version_numbers(client, name))
    if alias_version(client, name, CHAMPION) is None:
        restored = standing_champion(client, name)
        if restored is None:
            resolve_alias(name, CHAMPION)  # says which aliases there are
        demoted = history[-1] if history[-1] != restored else None
    else:
        demoted = history[-1]
        earlier = [version for version in history[:-1] if version in existing and version != demoted]
        if not earlier:
            shown = ", ".join(f"v{v}" + ("" if v in existing else " (deleted)") for v in history)
            raise ModelNotFoundError(f"{name} has no previous champion to roll back to (champion history: {shown})")
        restored = earlier[-1]
    check_loadable(name, restored, f"rolling back to v{restored}")
    settle_interrupted_promote(client, name)  # while champion is where a killed promote left it
    if demoted in existing:
        client.set_model_version_tag(name, demoted, ROLLED_BACK_TAG, f"champion moved back to v{restored}")
    last = len(history) - 1 - history[::-1].index(restored)
    _write_history(client, name, [v for v in history[:last + 1] if v in existing])
    kill_point("rollback.history_written")
    client.set_registered_model_alias(name, CHAMPION, restored)
    return demoted, restored


def decision_record(version: str, decision: PromotionDecision, name: str, run_id: str, uri: str,
                    experiment: str | None = None) -> dict:
    """The register stage's output: what was registered and what was decided (and the DVC experiment, if any)."""
    record = {"model_name": name, "version": version, "run_id": run_id, "tracking_uri": redacted(uri),
              **decision.record()}
    return record | ({"dvc_experiment": experiment} if experiment else {})
