"""Evaluate a model against the identity baseline (the moiré input itself) on paired images.

Per image, for the model's output and for the input: PSNR / SSIM / MSE, their tone-aligned PSNR /
SSIM (`pipeline.evaluation.tone`) and the energy of the tone-aligned residual in three frequency
bands (`pipeline.evaluation.residual_bands`), from which the summary says how much of the moiré
the model removed in each band.

Pairs stream: each is decoded, restored, scored, its row appended to the per-image CSV and dropped,
so memory stays that of one pair whatever the count (rows are a few hundred bytes; they are kept for
the summary). Only the first `grid_count` pairs are kept, as grid thumbnails.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterable

import pandas as pd
import torch

from pipeline.data.dataset import Pair, to_image, to_tensor
from pipeline.data.manifest import SCORED_MIN_SIDE
from pipeline.data.paired_folder import decoded_pairs
from pipeline.errors import InputDataError
from pipeline.evaluation.grid import GridRow, grid_cell
from pipeline.evaluation.metrics import image_metrics
from pipeline.evaluation.residual_bands import BANDS, band_energies, removed_fraction
from pipeline.evaluation.tone import align_tone
from pipeline.faults import kill_point
from pipeline.progress import track_progress
from pipeline.sources.paired_datasets import DatasetPair, PairList

METRICS = ("psnr", "ssim", "mse")
TONE_METRICS = ("tone_psnr", "tone_ssim")
CSV_FLOAT_FORMAT = "%.6f"  # per-image CSVs: 6 decimals, as metrics are compared at 1e-6


def image_scores(image: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    """Raw and tone-aligned metrics of one 3×H×W image against its clean target, and its residual's band energies."""
    aligned = align_tone(image, clean)
    tone = image_metrics(aligned, clean)
    energies = band_energies(aligned - clean)
    return {**image_metrics(image, clean), "tone_psnr": tone["psnr"], "tone_ssim": tone["ssim"],
            **{f"residual_{band}": energy for band, energy in energies.items()}}


def pair_row(name: str, restored: torch.Tensor, moire: torch.Tensor, clean: torch.Tensor) -> dict[str, float | str]:
    """One pair's per-image row: its name, the model's scores and the input's (`identity_…`)."""
    identity = image_scores(moire, clean)
    return {"image": name, **image_scores(restored, clean), **{f"identity_{k}": v for k, v in identity.items()}}


class PerImageCsv:
    """A per-image CSV written row by row (header with the first), each row flushed as soon as it is scored."""

    def __init__(self, handle: IO[str], rows: int = 0, float_format: str | None = CSV_FLOAT_FORMAT) -> None:
        self.handle, self.rows = handle, rows  # rows already in the file (a resumed run): no second header
        self.float_format = float_format

    def append(self, row: dict) -> None:
        """Write one row; formatted as DataFrame.to_csv formats the whole table (same bytes)."""
        pd.DataFrame([row]).to_csv(self.handle, header=self.rows == 0, index=False, float_format=self.float_format)
        self.handle.flush()
        self.rows += 1


def write_per_image(per_image: pd.DataFrame, path: Path) -> None:
    """The whole per-image table as a CSV, formatted as PerImageCsv writes it row by row."""
    per_image.to_csv(path, index=False, float_format=CSV_FLOAT_FORMAT)


@dataclass
class PairScores:
    """Per-image scores, their summary (summarize's keys and `skipped`), the skipped pairs as (name, reason),
    and the first pairs as before/after grid rows of thumbnails."""

    per_image: pd.DataFrame
    summary: dict
    skipped: list[tuple[str, str]] = field(default_factory=list)
    shown: list[GridRow] = field(default_factory=list)


def score_named_pairs(
    restore: Callable[[torch.Tensor], torch.Tensor], named_pairs: Iterable[tuple[str, Pair]], csv: Path | None = None,
    grid_count: int = 0, rows_before: int = 0, float_format: str | None = CSV_FLOAT_FORMAT,
) -> tuple[pd.DataFrame, list[GridRow]]:
    """Per-image scores of (name, pair) items consumed one at a time, each row appended to `csv` as it is scored
    (after the `rows_before` rows a resumed run already has there; `float_format` None: exact), and the first
    `grid_count` pairs as (moiré, restored, clean) grid thumbnails."""
    rows, shown = [], []
    with open(csv, "a" if rows_before else "w", newline="", encoding="utf-8") if csv is not None else nullcontext() \
            as handle:
        writer = PerImageCsv(handle, rows_before, float_format) if handle is not None else None
        for name, (moire, clean) in named_pairs:
            x, y = to_tensor(moire), to_tensor(clean)
            restored = restore(x)
            row = pair_row(name, restored, x, y)
            rows.append(row)
            if writer is not None:
                writer.append(row)
                kill_point(f"evaluate.row_{writer.rows}")  # fault injection: killed with n rows on disk
            if len(shown) < grid_count:
                shown.append((grid_cell(moire), grid_cell(to_image(restored)), grid_cell(clean)))
    return pd.DataFrame(rows), shown


def evaluate_named_pairs(
    restore: Callable[[torch.Tensor], torch.Tensor], named_pairs: Iterable[tuple[str, Pair]]
) -> pd.DataFrame:
    """Per-image scores (`psnr`, `tone_psnr`, `residual_low`, …, `identity_…`) of (name, pair) items, one at a time."""
    return score_named_pairs(restore, named_pairs)[0]


def evaluate_pairs(
    restore: Callable[[torch.Tensor], torch.Tensor], pairs: list[Pair], names: list[str]
) -> pd.DataFrame:
    """Per-image scores of the model (`psnr`, `tone_psnr`, `residual_low`, …) and of the input (`identity_…`)."""
    return evaluate_named_pairs(restore, zip(names, pairs))


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


def large_enough(named_pairs: Iterable[tuple[str, Pair]], skipped: list[tuple[str, str]]) -> Iterable[tuple[str, Pair]]:
    """The pairs whose sides are at least SSIM's window; smaller ones are appended to `skipped` with the reason."""
    for name, (moire, clean) in named_pairs:
        height, width = moire.shape[:2]
        if min(height, width) < SCORED_MIN_SIDE:
            side = SCORED_MIN_SIDE
            skipped.append((name, f"{width}x{height} pixels, below the {side}x{side} SSIM window"))
            continue
        yield name, (moire, clean)


def indexed_pairs(frame: pd.DataFrame, root: Path) -> PairList:
    """The pairs of a pairs-index frame (paths relative to `root`, or absolute) as a PairList named by moiré file name."""
    root = Path(root)
    return PairList("pairs index", [DatasetPair(Path(row.moire_path).name, str(getattr(row, "split", "")),
                                          root / row.moire_path, root / row.clean_path) for row in frame.itertuples()])


def evaluate_found_pairs(
    restore: Callable[[torch.Tensor], torch.Tensor], found: PairList, root: Path, csv: Path | None = None,
    grid_count: int = 0, description: str = "scoring", progress: str | None = None,
    done: pd.DataFrame | None = None, float_format: str | None = CSV_FLOAT_FORMAT,
) -> PairScores:
    """Scores of the pairs found under `root`, decoded one at a time (rows appended to `csv` in `float_format` as
    they are scored, with progress and ETA per pipeline.progress, `progress` forcing its mode); unreadable or too
    small pairs are skipped; InputDataError when none is readable. `done`: rows a killed run already wrote to
    `csv` (see pipeline.evaluation.resume); their pairs are not scored again."""
    done = pd.DataFrame() if done is None else done
    scored = set(done["image"]) if len(done) else set()
    remaining = [pair for pair in found.pairs if pair.name not in scored]
    skipped = [(item.name, item.reason) for item in found.skipped]
    # a pair counts as done when the next is asked for: it has then been decoded and scored, or skipped
    tracked = track_progress(remaining, description, total=len(found.pairs), unit="pairs", mode=progress,
                             start=len(found.pairs) - len(remaining))
    per_image, shown = score_named_pairs(restore, large_enough(decoded_pairs(tracked, skipped), skipped), csv,
                                         grid_count, rows_before=len(done), float_format=float_format)
    if len(done):  # in the pairs' order, as an uninterrupted run has them (a pair unreadable before may be read now)
        position = {pair.name: index for index, pair in enumerate(found.pairs)}
        per_image = pd.concat([done, per_image], ignore_index=True)
        per_image = per_image.iloc[per_image["image"].map(position).argsort(kind="stable")].reset_index(drop=True)
    if per_image.empty:
        first = f"; the first, {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise InputDataError(f"none of the {len(found.pairs)} selected pairs in {root} is readable "
                             f"({found.layout} layout, {len(skipped)} skipped{first})")
    return PairScores(per_image, {**summarize(per_image), "skipped": len(skipped)}, skipped, shown)
