"""Evaluate a model against the identity baseline (the moiré input itself) on paired images."""

from __future__ import annotations

from typing import Callable

import pandas as pd
import torch

from pipeline.data.dataset import Pair, to_tensor
from pipeline.evaluation.metrics import image_metrics

METRICS = ("psnr", "ssim", "mse")


def evaluate_pairs(
    restore: Callable[[torch.Tensor], torch.Tensor], pairs: list[Pair], names: list[str]
) -> pd.DataFrame:
    """Per-image metrics of the model (`psnr`, …) and of the input (`identity_psnr`, …)."""
    rows = []
    for name, (moire, clean) in zip(names, pairs):
        x, y = to_tensor(moire), to_tensor(clean)
        model_scores = image_metrics(restore(x), y)
        identity_scores = image_metrics(x, y)
        rows.append({"image": name, **model_scores, **{f"identity_{k}": v for k, v in identity_scores.items()}})
    return pd.DataFrame(rows)


def summarize(per_image: pd.DataFrame) -> dict[str, float | int]:
    """Means of every metric for the model and the identity baseline, plus the PSNR gain."""
    summary: dict[str, float | int] = {"count": int(len(per_image))}
    for metric in METRICS:
        summary[metric] = float(per_image[metric].mean())
        summary[f"identity_{metric}"] = float(per_image[f"identity_{metric}"].mean())
    summary["psnr_gain_over_identity"] = summary["psnr"] - summary["identity_psnr"]
    return summary
