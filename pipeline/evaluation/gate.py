"""The frozen gate set (the test split, recorded by hash) and the rule that moves `champion`.

Gate set hash: for every test pair, SHA-256 over the moiré and clean file *names* and both files'
bytes; the sorted per-pair digests are hashed again. Names only (not folders), so the same test set
hashes the same on another machine or under another absolute path (imported datasets are indexed by
absolute path); sorted, because the gate metrics are means and do not depend on pair order. Any
changed, added or removed test image changes the hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from pipeline.errors import InputDataError

GATE_METRICS = ("psnr", "ssim", "mse")
# Scores round-trip through MLflow tags as decimal strings; a margin met exactly must not fail on the last bit.
SLACK = 1e-9


@dataclass(frozen=True)
class GateSet:
    """The test pairs of a pairs index and their hash."""

    frame: pd.DataFrame
    root: Path
    digest: str


@dataclass(frozen=True)
class GateRule:
    """How much better a challenger must be: PSNR margin (dB) and the SSIM drop tolerated."""

    margin_db: float
    ssim_tolerance: float


@dataclass(frozen=True)
class GateScores:
    """One model version's means on one gate set."""

    version: str
    psnr: float
    ssim: float
    mse: float
    gate_set: str
    rescored: bool = False  # scored again here because its recorded scores were on another gate set


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the challenger becomes champion, why, and the comparison it rests on."""

    promote: bool
    reason: str
    challenger: GateScores
    champion: GateScores | None
    rule: GateRule

    def record(self) -> dict:
        """JSON-ready fields for registration.json (flat champion fields kept for older readers)."""
        champion = self.champion
        return {
            "promote": self.promote,
            "reason": self.reason,
            "champion_version": champion.version if champion else None,
            "champion_psnr": champion.psnr if champion else None,
            "gate_set": self.challenger.gate_set,
            "challenger": asdict(self.challenger),
            "champion": asdict(champion) if champion else None,
            "margin_db": self.rule.margin_db,
            "ssim_tolerance": self.rule.ssim_tolerance,
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


def gate_set_hash(test: pd.DataFrame, root: Path) -> str:
    """SHA-256 over the test pairs' file names and bytes, independent of order and location."""
    digests = []
    for row in test.itertuples():
        pair = hashlib.sha256()
        for rel in (row.moire_path, row.clean_path):
            path = Path(root) / rel
            try:
                content = path.read_bytes()
            except OSError as exc:
                raise InputDataError(f"test image not readable: {path} ({exc.strerror}); run `dvc repro`") from None
            pair.update(Path(rel).name.encode() + b"\0" + hashlib.sha256(content).digest())
        digests.append(pair.hexdigest())
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


def load_gate_set(pairs_index: Path, data: Path) -> GateSet:
    """The test split of `pairs_index` (paths relative to `data`) with its hash."""
    test = gate_pairs(pairs_index)
    return GateSet(test, Path(data), gate_set_hash(test, data))


def score_on_gate(model: torch.nn.Module, gate: GateSet, device: torch.device) -> dict[str, float]:
    """Mean PSNR / SSIM / MSE of a model on the gate set, scored as the evaluate stage scores."""
    from pipeline.data.dataset import load_pairs
    from pipeline.evaluation.evaluate import evaluate_pairs, summarize
    from pipeline.inference import restore_tensor

    pairs = load_pairs(gate.frame, gate.root)
    with torch.inference_mode():
        per_image = evaluate_pairs(lambda x: restore_tensor(model, x, device), pairs,
                                   [Path(p).name for p in gate.frame.moire_path])
    summary = summarize(per_image)
    return {metric: summary[metric] for metric in GATE_METRICS}


def model_dir_scorer(gate: GateSet, device: torch.device) -> Callable[[Path], dict[str, float]]:
    """A function scoring a saved model folder (model.pt + model.json) on the gate set: how champions are re-scored."""
    from pipeline.models import load_model

    return lambda model_dir: score_on_gate(load_model(model_dir, device)[0], gate, device)


def decide_promotion(challenger: GateScores, champion: GateScores | None, rule: GateRule) -> PromotionDecision:
    """Promote when there is no champion, or PSNR beats it by the margin with no SSIM drop beyond the tolerance.

    A tie never promotes, even with a zero margin: moving `champion` to an equal model is churn.
    """
    if champion is None:
        return PromotionDecision(True, "no champion yet", challenger, None, rule)
    if champion.version == challenger.version:
        return PromotionDecision(False, f"v{challenger.version} is already champion", challenger, champion, rule)
    if champion.gate_set != challenger.gate_set:
        raise ValueError(f"v{challenger.version} and v{champion.version} were scored on different gate sets")
    gain = challenger.psnr - champion.psnr
    ssim_drop = champion.ssim - challenger.ssim
    psnr_ok = gain > 0 and gain >= rule.margin_db - SLACK
    ssim_ok = ssim_drop <= rule.ssim_tolerance + SLACK
    psnr_text = (f"test PSNR {challenger.psnr:.3f} dB vs {champion.psnr:.3f} dB "
                 f"({gain:+.3f} dB, margin {rule.margin_db:g} dB)")
    ssim_text = (f"SSIM {challenger.ssim:.4f} vs {champion.ssim:.4f} "
                 f"({-ssim_drop:+.4f}, tolerance {rule.ssim_tolerance:g})")
    if psnr_ok and ssim_ok:
        reason = f"beats champion v{champion.version}: {psnr_text}; {ssim_text}"
    elif not psnr_ok:
        reason = f"does not beat champion v{champion.version} by the margin: {psnr_text}"
    else:
        reason = f"SSIM regresses beyond the tolerance against champion v{champion.version}: {ssim_text}"
    return PromotionDecision(psnr_ok and ssim_ok, reason, challenger, champion, rule)
