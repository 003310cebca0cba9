"""Evaluate a model against the identity baseline (the moiré input itself) on paired images.

Per image, for the model's output and for the input: PSNR / SSIM / MSE, their tone-aligned PSNR /
SSIM (`pipeline.evaluation.tone`) and the energy of the tone-aligned residual in three frequency
bands (`pipeline.evaluation.residual_bands`), from which the summary says how much of the moiré
the model removed in each band.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import torch

from pipeline.data.dataset import Pair, to_tensor
from pipeline.data.paired_folder import decoded_pairs
from pipeline.errors import InputDataError
from pipeline.sources.paired_datasets import PairList
from pipeline.evaluation.metrics import image_metrics
from pipeline.evaluation.residual_bands import BANDS, band_energies, removed_fraction
from pipeline.evaluation.tone import align_tone

METRICS = ("psnr", "ssim", "mse")
TONE_METRICS = ("tone_psnr", "tone_ssim")


def image_scores(image: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    """Raw and tone-aligned metrics of one 3×H×W image against its clean target, and its residual's band energies."""
    aligned = align_tone(image, clean)
    tone = image_metrics(aligned, clean)
    energies = band_energies(aligned - clean)
    return {**image_metrics(image, clean), "tone_psnr": tone["psnr"], "tone_ssim": tone["ssim"],
            **{f"residual_{band}": energy for band, energy in energies.items()}}


def evaluate_pairs(
    restore: Callable[[torch.Tensor], torch.Tensor], pairs: list[Pair], names: list[str]
) -> pd.DataFrame:
    """Per-image scores of the model (`psnr`, `tone_psnr`, `residual_low`, …) and of the input (`identity_…`)."""
    return evaluate_named_pairs(restore, zip(names, pairs))


def evaluate_named_pairs(
    restore: Callable[[torch.Tensor], torch.Tensor], named_pairs: Iterable[tuple[str, Pair]]
) -> pd.DataFrame:
    """evaluate_pairs over (name, pair) items, consumed one at a time (a lazy reader keeps one pair in memory)."""
    rows = []
    for name, (moire, clean) in named_pairs:
        x, y = to_tensor(moire), to_tensor(clean)
        model_scores = image_scores(restore(x), y)
        identity_scores = image_scores(x, y)
        rows.append({"image": name, **model_scores, **{f"identity_{k}": v for k, v in identity_scores.items()}})
    return pd.DataFrame(rows)


def summarize(per_image: pd.DataFrame) -> dict[str, float | int]:
    """Means of every metric for the model and the identity baseline, the PSNR gains, and the moiré removed per band."""
    summary: dict[str, float | int] = {"count": int(len(per_image))}
    for metric in METRICS + TONE_METRICS:
        summary[metric] = float(per_image[metric].mean())
        summary[f"identity_{metric}"] = float(per_image[f"identity_{metric}"].mean())
    summary["psnr_gain_over_identity"] = summary["psnr"] - summary["identity_psnr"]
    summary["tone_psnr_gain_over_identity"] = summary["tone_psnr"] - summary["identity_tone_psnr"]
    for band in BANDS:  # energy-weighted over images: strong-moiré images count for more
        summary[f"moire_removed_{band}"] = removed_fraction(
            float(per_image[f"residual_{band}"].sum()), float(per_image[f"identity_residual_{band}"].sum()))
    return summary


MIN_SIDE = 11  # SSIM's Gaussian window is 11×11


def large_enough(named_pairs: Iterable[tuple[str, Pair]], skipped: list[tuple[str, str]]) -> Iterable[tuple[str, Pair]]:
    """The pairs whose sides are at least SSIM's window; smaller ones are appended to `skipped` with the reason."""
    for name, (moire, clean) in named_pairs:
        height, width = moire.shape[:2]
        if min(height, width) < MIN_SIDE:
            skipped.append((name, f"{width}x{height} pixels, below the {MIN_SIDE}x{MIN_SIDE} SSIM window"))
            continue
        yield name, (moire, clean)


def evaluate_found_pairs(
    restore: Callable[[torch.Tensor], torch.Tensor], found: PairList, root: Path
) -> tuple[pd.DataFrame, dict, list[tuple[str, str]]]:
    """Per-image scores, their summary (with `skipped`) and the skipped pairs as (name, reason) of the pairs found
    under `root`, decoded one at a time; unreadable pairs are skipped; InputDataError when none is readable."""
    skipped = [(item.name, item.reason) for item in found.skipped]
    per_image = evaluate_named_pairs(restore, large_enough(decoded_pairs(found.pairs, skipped), skipped))
    if per_image.empty:
        raise InputDataError(f"none of the {len(found.pairs)} selected pairs in {root} is readable "
                             f"({found.layout} layout, {len(skipped)} skipped)")
    return per_image, {**summarize(per_image), "skipped": len(skipped)}, skipped
