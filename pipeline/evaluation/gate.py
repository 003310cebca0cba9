"""The frozen gate set, recorded by hash, and the rule that moves `champion`.

Two kinds of gate. `synthetic`: the test split of the pairs index, scored on PSNR (margin) and SSIM
(tolerance). `real`, whenever `evaluate.real_sets` lists any: the real photo sets, scored as the
served model restores them, on the means over sets of raw PSNR, tone-aligned PSNR (both must beat the
champion by the margin) and SSIM (tolerance); the champion must be the model that is best on real photos.

Gate set hash: for every pair, SHA-256 over the moiré and clean file *names* and both files'
bytes; the sorted per-pair digests are hashed again. Names only (not folders), so the same set
hashes the same on another machine or under another absolute path (imported datasets are indexed by
absolute path); sorted, because the gate metrics are means and do not depend on pair order. Any
changed, added or removed image changes the hash. Real sets: each set's hash, keyed by its name,
hashed again in name order (pipeline.evaluation.real_sets.real_gate_hash). A version's recorded scores are
keyed by the set's hash together with how its photos were restored (`scored_as`: tiles, size cap, falloff), so
scores restored otherwise, which differ for the same weights, are never compared: the champion is re-scored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import torch

from pipeline.config import InferParams
from pipeline.errors import InputDataError

GATE_METRICS = ("psnr", "ssim", "mse")
# Scores round-trip through MLflow tags as decimal strings; a margin met exactly must not fail on the last bit.
SLACK = 1e-9
METRIC_LABELS = {"psnr": "PSNR", "tone_psnr": "tone-aligned PSNR", "ssim": "SSIM", "mse": "MSE"}


@dataclass(frozen=True)
class GateKind:
    """What a gate set is, where a version's means on it are recorded, and which of them must beat the margin."""

    name: str  # `gate.kind` tag
    prefix: str  # metric and tag names of the means: test_psnr, real_tone_psnr
    set_tag: str  # version tag holding the hash of the set those means were computed on
    metrics: tuple[str, ...]  # recorded and compared; "psnr", "ssim" and "mse" always among them
    margin_metrics: tuple[str, ...]  # each must beat the champion's by the margin
    label: str  # the set, in messages

    def describe(self, metric: str) -> str:
        """A metric as messages name it: `test PSNR`, `real tone-aligned PSNR`."""
        return f"{self.prefix} {METRIC_LABELS[metric]}"


SYNTHETIC = GateKind("synthetic", "test", "gate_set", GATE_METRICS, ("psnr",), "test split")
REAL = GateKind("real", "real", "real_gate_set", ("psnr", "tone_psnr", "ssim", "mse"), ("psnr", "tone_psnr"),
                "real sets")
GATE_KINDS = {kind.name: kind for kind in (SYNTHETIC, REAL)}


@dataclass(frozen=True)
class GateSet:
    """The test pairs of a pairs index and their hash."""

    frame: pd.DataFrame
    root: Path
    digest: str


@dataclass(frozen=True)
class GateRule:
    """How much better a challenger must be: PSNR margin (dB) over the champion, the SSIM drop tolerated, and
    whether it must also beat the untouched input (its own recorded `identity` scores on the gate set)."""

    margin_db: float
    ssim_tolerance: float
    over_input: bool = True


def input_floor_text(over_input: bool | None, untouched_known: bool) -> str | None:
    """The input floor of a decision in words: off, on, or on but not applied (the input's scores unknown); None
    for a decision recorded before the floor existed."""
    if over_input is None:
        return None
    if not over_input:
        return "off (register.require_gain_over_input: false)"
    if untouched_known:
        return "on: the challenger must beat the untouched input on the gate set"
    return "on, not applied: the untouched input's scores on this gate set are not known"


@dataclass(frozen=True)
class GateScores:
    """One model version's means on one gate set."""

    version: str
    psnr: float
    ssim: float
    mse: float
    gate_set: str
    rescored: bool = False  # scored again here because its recorded scores were on another gate set
    kind: str = SYNTHETIC.name
    tone_psnr: float | None = None  # real gate only

    @classmethod
    def from_means(cls, version: str, means: dict[str, float], gate_set: str, kind: GateKind,
                   rescored: bool = False) -> "GateScores":
        """Scores from a {metric: mean} mapping holding at least `kind.metrics`."""
        return cls(version, gate_set=gate_set, rescored=rescored, kind=kind.name,
                   **{metric: float(means[metric]) for metric in kind.metrics})

    def means(self) -> dict[str, float]:
        """{metric: mean} of the metrics its gate kind records."""
        return {metric: getattr(self, metric) for metric in GATE_KINDS[self.kind].metrics}


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the challenger becomes champion, why, and the comparison it rests on."""

    promote: bool
    reason: str
    challenger: GateScores
    champion: GateScores | None
    rule: GateRule
    untouched: GateScores | None = None  # the input's scores the floor compared with; None: not applied

    def record(self) -> dict:
        """JSON-ready fields for registration.json (flat champion fields kept for older readers)."""
        champion = self.champion
        return {
            "promote": self.promote,
            "reason": self.reason,
            "champion_version": champion.version if champion else None,
            "champion_psnr": champion.psnr if champion else None,
            "gate_set": self.challenger.gate_set,
            "gate_kind": self.challenger.kind,
            "challenger": asdict(self.challenger),
            "champion": asdict(champion) if champion else None,
            "margin_db": self.rule.margin_db,
            "ssim_tolerance": self.rule.ssim_tolerance,
            "over_input": self.rule.over_input,
            "untouched": asdict(self.untouched) if self.untouched else None,
        }


def gate_pairs(pairs_index: Path) -> pd.DataFrame:
    """The test rows of a pairs index, in pair_id order."""
    if not Path(pairs_index).is_file():
        raise InputDataError(f"pairs index not found: {pairs_index} (`dvc repro preprocess` writes it)")
    frame = pd.read_parquet(pairs_index)
    test = frame[frame.split == "test"].sort_values("pair_id")
    if test.empty:
        raise InputDataError(f"{pairs_index} has no test pairs; raise preprocess.test_fraction")
    return test


def pairs_digest(pairs: Iterable[tuple[Path, Path]], unreadable_counts: bool = False) -> str:
    """SHA-256 over (moiré, clean) files' names and bytes, independent of order and location. A file that
    cannot be read raises OSError, or with `unreadable_counts` enters the hash by its name alone (a real
    set's pair that scoring will skip)."""
    digests = []
    for files in pairs:
        pair = hashlib.sha256()
        for path in files:
            try:
                content = hashlib.sha256(Path(path).read_bytes()).digest()
            except OSError:
                if not unreadable_counts:
                    raise
                content = b"unreadable"
            pair.update(Path(path).name.encode() + b"\0" + content)
        digests.append(pair.hexdigest())
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


SCORING_SETTINGS = ("tile_size", "tile_overlap", "max_side", "falloff")
"""The infer settings a model's scores depend on (the same weights score otherwise under others)."""


def scored_as(set_digest: str, infer: InferParams) -> str:
    """The key of scores on a gate set restored with `infer`'s settings: the set's hash and SCORING_SETTINGS."""
    settings = json.dumps({name: getattr(infer, name) for name in SCORING_SETTINGS}, sort_keys=True)
    return hashlib.sha256(f"{set_digest}\n{settings}".encode()).hexdigest()


def gate_set_hash(test: pd.DataFrame, root: Path) -> str:
    """SHA-256 over the test pairs' file names and bytes, independent of order and location."""
    try:
        return pairs_digest((Path(root) / row.moire_path, Path(root) / row.clean_path) for row in test.itertuples())
    except OSError as exc:
        raise InputDataError(f"test image not readable: {exc.filename} ({exc.strerror}); run `dvc repro`") from None


def load_gate_set(pairs_index: Path, data: Path) -> GateSet:
    """The test split of `pairs_index` (paths relative to `data`) with its hash."""
    test = gate_pairs(pairs_index)
    return GateSet(test, Path(data), gate_set_hash(test, data))


def score_on_gate(model: torch.nn.Module, gate: GateSet, device: torch.device,
                  infer: InferParams | None = None) -> dict[str, float]:
    """Mean PSNR / SSIM / MSE of a model on the gate set, scored as the evaluate stage scores: pairs decoded one
    at a time, restored as served with `infer`'s tiles (the infer section's defaults when None)."""
    from pipeline.evaluation.evaluate import evaluate_found_pairs, indexed_pairs
    from pipeline.evaluation.real_sets import served_restorer

    restore = served_restorer(model, device, infer or InferParams())
    with torch.inference_mode():
        scores = evaluate_found_pairs(restore, indexed_pairs(gate.frame, gate.root), gate.root,
                                      description="re-scoring on the test split")
    # the input's means too (`identity_…`): the same for every model, they are the gate's floor
    return {key: scores.summary[key] for metric in GATE_METRICS for key in (metric, f"identity_{metric}")}


def model_dir_scorer(gate: GateSet, device: torch.device,
                     infer: InferParams | None = None) -> Callable[[Path], dict[str, float]]:
    """A function scoring a saved model folder (model.pt + model.json) on the gate set: how champions are re-scored."""
    from pipeline.models import load_model

    return lambda model_dir: score_on_gate(load_model(model_dir, device)[0], gate, device, infer)


@dataclass(frozen=True)
class LocalGate:
    """The gate set of this checkout: its kind, its hash, what it is, and a scorer of model folders on it."""

    kind: GateKind
    digest: str
    description: str
    rescore: Callable[[Path], dict[str, float]]
    set_digests: dict[str, str] = field(default_factory=dict)  # each real set's hash, by name


def gate_kind(real_sets: list) -> GateKind:
    """REAL when params.yaml lists any real set (the champion must be best on real photos), else SYNTHETIC."""
    return REAL if real_sets else SYNTHETIC


def local_gate(params, data: Path, pairs_index: Path, base: Path, device: torch.device) -> LocalGate:
    """The gate set `params` (a pipeline.config.Params) calls for: its real sets (paths relative to `base`,
    the project root), else the test split of `pairs_index` (paths relative to `data`)."""
    if gate_kind(params.evaluate.real_sets) is REAL:
        from pipeline.evaluation.real_sets import find_real_sets, real_gate_hash, real_sets_scorer

        sets = find_real_sets(params.evaluate.real_sets, base)
        counts = ", ".join(f"{real.name} {len(real.found.pairs)}" for real in sets)
        return LocalGate(REAL, scored_as(real_gate_hash(sets), params.infer), f"real sets ({counts} pairs)",
                         real_sets_scorer(sets, device, params.infer), {real.name: real.digest for real in sets})
    gate = load_gate_set(pairs_index, data)
    return LocalGate(SYNTHETIC, scored_as(gate.digest, params.infer), f"local test split ({len(gate.frame)} pairs)",
                     model_dir_scorer(gate, device, params.infer))


def decide_promotion(challenger: GateScores, champion: GateScores | None, rule: GateRule,
                     untouched: GateScores | None = None) -> PromotionDecision:
    """Promote when there is no champion, or when every margin metric of the gate kind (PSNR; on real sets
    raw and tone-aligned PSNR) beats the champion's by the margin with no SSIM drop beyond the tolerance;
    never (with `rule.over_input`) a challenger no better than the `untouched` input on those metrics.

    A tie never promotes, even with a zero margin: moving `champion` to an equal model is churn.
    """
    floor = untouched if rule.over_input else None
    return replace(_compare(challenger, champion, rule, floor), untouched=floor)


def _compare(challenger: GateScores, champion: GateScores | None, rule: GateRule,
             untouched: GateScores | None) -> PromotionDecision:
    """decide_promotion's rule, the floor (`untouched`, when given) first."""
    if champion is not None and champion.version == challenger.version:
        return PromotionDecision(False, f"v{challenger.version} is already champion", challenger, champion, rule)
    kind = GATE_KINDS[challenger.kind]
    if untouched is not None:
        gains = {metric: getattr(challenger, metric) - getattr(untouched, metric) for metric in kind.margin_metrics}
        if not all(gain > 0 for gain in gains.values()):
            scores = ", ".join(f"{kind.describe(metric)} {getattr(challenger, metric):.3f} dB vs the input's "
                               f"{getattr(untouched, metric):.3f} dB ({gain:+.3f} dB)"
                               for metric, gain in gains.items())
            reason = f"not better than the untouched input: {scores}"
            return PromotionDecision(False, reason, challenger, champion, rule)
    if champion is None:
        return PromotionDecision(True, "no champion yet", challenger, None, rule)
    if (champion.gate_set, champion.kind) != (challenger.gate_set, challenger.kind):
        raise ValueError(f"v{challenger.version} and v{champion.version} were scored on different gate sets")
    gains = {metric: getattr(challenger, metric) - getattr(champion, metric) for metric in kind.margin_metrics}
    ssim_drop = champion.ssim - challenger.ssim
    psnr_ok = all(gain > 0 and gain >= rule.margin_db - SLACK for gain in gains.values())
    ssim_ok = ssim_drop <= rule.ssim_tolerance + SLACK
    psnr_text = ", ".join(f"{kind.describe(metric)} {getattr(challenger, metric):.3f} dB vs "
                          f"{getattr(champion, metric):.3f} dB ({gain:+.3f} dB, margin {rule.margin_db:g} dB)"
                          for metric, gain in gains.items())
    ssim_text = (f"{kind.describe('ssim')} {challenger.ssim:.4f} vs {champion.ssim:.4f} "
                 f"({-ssim_drop:+.4f}, tolerance {rule.ssim_tolerance:g})")
    if psnr_ok and ssim_ok:
        reason = f"beats champion v{champion.version}: {psnr_text}; {ssim_text}"
    elif not psnr_ok:
        reason = f"does not beat champion v{champion.version} by the margin: {psnr_text}"
    else:
        reason = f"SSIM regresses beyond the tolerance against champion v{champion.version}: {ssim_text}"
    return PromotionDecision(psnr_ok and ssim_ok, reason, challenger, champion, rule)
