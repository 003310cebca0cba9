"""Real paired sets (`evaluate.real_sets`): find them, hash them, score a model on them as it is served.

A model is scored on real photos exactly as a user of the champion gets them: uint8 RGB in, restored
tile by tile with the `infer` section's tile settings (the registered pyfunc's `model_config`), uint8
out. Several sets can be groups of one folder (`include: "fhdmi_*"`); each set counts once in the means
over sets, whatever its size, so a large set cannot drown a small one from another source.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.config import InferParams, RealSet
from pipeline.data.dataset import to_image, to_tensor
from pipeline.data.paired_folder import find_paired_folder
from pipeline.errors import InputDataError
from pipeline.evaluation.evaluate import evaluate_found_pairs
from pipeline.evaluation.gate import REAL, pairs_digest, scored_as
from pipeline.sources.paired_datasets import PairList

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RealSetPairs:
    """One configured real set as found on disk: its selected pairs, unpaired files and content hash."""

    name: str
    key: str  # `evaluate.real_sets[i]`, so messages name the entry at fault
    root: Path
    found: PairList
    digest: str  # pairs_digest of the selected pairs (readable or not: any changed byte changes it)


@dataclass(frozen=True)
class RealSetScores:
    """A model's per-image scores on one real set, their summary, and the pairs skipped as (name, reason)."""

    per_image: pd.DataFrame
    summary: dict
    skipped: list[tuple[str, str]] = field(default_factory=list)


def find_real_sets(real_sets: list[RealSet], base: Path) -> list[RealSetPairs]:
    """Every configured set's selected pairs, relative paths taken from `base` (the project root)."""
    return [find_real_set(real_set, base, index) for index, real_set in enumerate(real_sets)]


def find_real_set(real_set: RealSet, base: Path, index: int) -> RealSetPairs:
    """One set's selected pairs and hash; InputDataError naming the entry when it has none or cannot be read."""
    key = f"evaluate.real_sets[{index}]"
    root = Path(base) / real_set.path  # an absolute path stays as it is
    try:
        found = find_paired_folder(root, real_set.layout, real_set.split, real_set.include, real_set.limit)
        # an unreadable pair counts by its name: scoring skips it, as the README promises
        digest = pairs_digest(((pair.moire_path, pair.clean_path) for pair in found.pairs), unreadable_counts=True)
    except InputDataError as exc:
        raise InputDataError(f"{key} ({real_set.name}): {exc}") from None
    return RealSetPairs(real_set.name, key, root, found, digest)


def real_gate_hash(sets: list[RealSetPairs]) -> str:
    """The real gate set's hash: each set's name and content hash, in name order (not params.yaml's order)."""
    lines = sorted(f"{real.name}\0{real.digest}" for real in sets)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def check_unchanged_since_scored(evaluation: dict, now: str, set_digests: dict[str, str]) -> None:
    """DVC cannot track real sets outside the repository, so their hash when scored (metrics.json's
    real_gate_set) must be today's before anything is decided on those scores; the refusal names the sets
    whose files changed (`set_digests`: each set's hash now)."""
    scored = evaluation.get(REAL.set_tag)
    if scored == now:
        return
    if scored is None:  # an evaluation from before the real sets were listed: nothing of them was scored
        raise InputDataError(f"the real sets of evaluate.real_sets ({', '.join(sorted(set_digests))}) were not scored "
                             "by the evaluation this stage reads; run `dvc repro -f evaluate` to score them")
    scored_sets = {name: values.get("hash") for name, values in (evaluation.get("real") or {}).items()}
    changed = sorted(name for name in set_digests.keys() | scored_sets.keys()
                     if set_digests.get(name) != scored_sets.get(name))
    which = f" (changed: {', '.join(changed)})" if changed else " (the infer settings they were scored with changed)"
    raise InputDataError(f"the real sets of evaluate.real_sets hash to {now[:12]} but were scored as "
                         f"{scored[:12]}{which}; run `dvc repro -f evaluate` to score them again")


def served_restorer(model: nn.Module, device: torch.device, infer: InferParams) -> Callable[[torch.Tensor], torch.Tensor]:
    """restore(x) for 3×H×W x in [0, 1] as the served model does it: uint8 in, tiled (and shrunk) per `infer`,
    uint8 out."""
    from pipeline.inference import check_tiling, restore_image, spatial_multiple

    check_tiling(infer.tile_size, infer.tile_overlap, infer.tile_batch, spatial_multiple(model))

    def restore(image: torch.Tensor) -> torch.Tensor:
        restored = restore_image(model, to_image(image), device, infer.tile_size, infer.tile_overlap, infer.tile_batch,
                                 max_side=infer.max_side, falloff=infer.falloff)
        return to_tensor(restored)

    return restore


def score_real_set(restore: Callable[[torch.Tensor], torch.Tensor], real: RealSetPairs, csv: Path | None = None,
                   progress: str | None = None) -> RealSetScores:
    """Per-image scores (each row appended to `csv` as it is scored) and their summary (summarize's keys, `skipped`,
    `hash`); pairs are decoded one at a time, unreadable ones skipped, logged and counted; InputDataError naming
    the entry when none is readable."""
    try:
        scores = evaluate_found_pairs(restore, real.found, real.root, csv, description=f"scoring real set {real.name}",
                                      progress=progress)
    except InputDataError as exc:
        raise InputDataError(f"{real.key} ({real.name}): {exc}") from None
    for name, reason in scores.skipped:
        log.warning("real set %s: skipped %s: %s", real.name, name, reason)
    return RealSetScores(scores.per_image, {**scores.summary, "hash": real.digest}, scores.skipped)


def real_means(summaries: dict[str, dict]) -> dict[str, float]:
    """The real gate's scores, and the untouched input's (`identity_…`, which the gate's floor is): for each of
    its metrics, the mean over sets of each set's mean."""
    metrics = (*REAL.metrics, *(f"identity_{metric}" for metric in REAL.metrics))
    return {metric: float(np.mean([summary[metric] for summary in summaries.values()])) for metric in metrics}


def real_sets_scorer(sets: list[RealSetPairs], device: torch.device, infer: InferParams) -> Callable[[Path], dict[str, float]]:
    """A function scoring a saved model folder on the real sets: how a champion is re-scored for the real gate."""
    from pipeline.models import load_model

    def score(model_dir: Path) -> dict[str, float]:
        restore = served_restorer(load_model(model_dir, device)[0], device, infer)
        with torch.inference_mode():
            return real_means({real.name: score_real_set(restore, real).summary for real in sets})

    return score


def evaluation_metrics(test_summary: dict, real_scores: dict[str, RealSetScores], sets: list[RealSetPairs],
                       infer: InferParams) -> dict:
    """metrics.json: the test split's summary at the top level (as before real sets existed); with real sets,
    `real` (per set), `real_mean` (the real gate's scores) and `real_gate_set` (their key: the sets' hash and
    how they were restored, pipeline.evaluation.gate.scored_as)."""
    if not real_scores:
        return dict(test_summary)
    summaries = {name: scores.summary for name, scores in real_scores.items()}
    return {**test_summary, "real": summaries, "real_mean": real_means(summaries),
            "real_gate_set": scored_as(real_gate_hash(sets), infer)}
