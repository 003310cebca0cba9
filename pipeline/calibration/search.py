"""Fit the simulator's ranges to real photos: an Optuna search that writes a preset file.

Each trial proposes ranges for the knobs in `KNOBS` on top of a base preset, renders a small,
fixed sample of synthetic pairs with them (same seed every trial, so trials differ only by their
ranges) and scores how far the sample's statistics (`pipeline.calibration.statistics`) are from
the real photos'. TPE with a fixed seed makes the search repeatable. The best trial's ranges are
written as a preset file that `synthesize.preset` accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.calibration.statistics import (
    PairedStatistics, UnpairedStatistics, paired_statistics, statistics_distance, unpaired_statistics,
)
from pipeline.config import SynthesizeParams, deep_merge, parse_params
from pipeline.data.dataset import Pair
from pipeline.errors import InputDataError, ParamsError
from pipeline.moire.presets import PRESETS, preset_values

CALIBRATION_STREAM = 0x43414C49  # "CALI": the sample's pairs, apart from every stage's streams


@dataclass(frozen=True)
class Knob:
    """One simulator range the search may move: its low end and its width, each within bounds."""

    section: str
    key: str
    low: tuple[float, float]
    width: tuple[float, float]
    centred: bool = False  # `low` bounds the range's centre instead (exposure errors on both sides)
    limit: tuple[float, float] = (0.0, float("inf"))  # what the parameter itself allows

    @property
    def name(self) -> str:
        """`section.key`, as in params.yaml."""
        return f"{self.section}.{self.key}"

    def to_range(self, first: float, width: float) -> list[float]:
        """The [min, max] range from a sampled first value and width, clipped to the parameter's limits."""
        low, high = (first - width / 2, first + width / 2) if self.centred else (first, first + width)
        return [round(max(low, self.limit[0]), 4), round(min(high, self.limit[1]), 4)]


KNOBS = (
    Knob("optics", "blur_sigma", low=(0.2, 1.6), width=(0.0, 1.0), limit=(0.0, 5.0)),
    Knob("isp", "chroma_denoise", low=(0.0, 2.5), width=(0.0, 2.5), limit=(0.0, 8.0)),
    Knob("sensor", "output_pitch", low=(0.4, 1.0), width=(0.0, 0.6), limit=(0.1, 8.0)),
    Knob("display", "fill_factor", low=(0.4, 0.9), width=(0.0, 0.3), limit=(0.05, 1.0)),
    Knob("sensor", "exposure_ev", low=(-0.8, 0.4), width=(0.0, 0.8), centred=True, limit=(-4.0, 2.0)),
    Knob("display", "black_level", low=(0.0, 0.0), width=(0.0, 0.012), limit=(0.0, 0.3)),
    Knob("isp", "sharpen", low=(0.0, 0.0), width=(0.0, 1.5), limit=(0.0, 3.0)),
)

RealStatistics = PairedStatistics | UnpairedStatistics


@dataclass
class CalibrationResult:
    """The best ranges found, and the distances and statistics before (base preset) and after."""

    base: str
    overrides: dict[str, dict[str, list[float]]]
    real: RealStatistics
    before: RealStatistics
    after: RealStatistics
    distance_before: float
    distance_after: float
    trials: int
    history: list[float] = field(default_factory=list)  # each trial's distance, in order


def knob_overrides(values: dict[str, float]) -> dict[str, dict[str, list[float]]]:
    """Nested `{section: {key: [min, max]}}` from flat trial values `{name.first, name.width}`."""
    overrides: dict[str, dict[str, list[float]]] = {}
    for knob in KNOBS:
        first = values.get(f"{knob.name}.first", knob.low[0])
        width = values.get(f"{knob.name}.width", knob.width[0])
        overrides.setdefault(knob.section, {})[knob.key] = knob.to_range(first, width)
    return overrides


def synthesis_config(base: str, overrides: dict[str, Any], size: int, n_pairs: int) -> SynthesizeParams:
    """The synthesize section a trial renders with: the base preset, the trial's ranges, the sample's size."""
    raw = deep_merge(preset_values(base), overrides)
    if overrides:  # the knobs assume auto-exposure and a camera-resolution frame; the base is scored as it is
        raw = deep_merge({"sensor": {"auto_exposure": True, "output_pitch": [0.6, 1.15]}}, raw)
    return parse_params({"synthesize": {**raw, "preset": base, "size": size, "n_pairs": n_pairs}},
                        source="calibration").synthesize


def render_sample(cfg: SynthesizeParams, seed: int) -> list[Pair]:
    """cfg.n_pairs synthetic pairs spread over the sources; the same pairs' randomness for any ranges."""
    from pipeline.data.synthetic import render_pair, single_threaded, source_for_pair
    from pipeline.sources import collect_sources

    specs, _ = collect_sources(cfg.sources.bundled, cfg.sources.procedural, cfg.sources.folders, cfg.sources.screen_kinds)
    if not specs:
        raise InputDataError("no usable source images for the calibration sample")
    pairs = []
    with single_threaded():
        for index in range(cfg.n_pairs):
            moire, clean, _ = render_pair(index, specs[source_for_pair(index, cfg.n_pairs, len(specs))], cfg,
                                          seed ^ CALIBRATION_STREAM)
            pairs.append((moire, clean))
    return pairs


def sample_statistics(pairs: list[Pair], like: RealStatistics) -> RealStatistics:
    """The synthetic sample's statistics of the same kind as the real set's."""
    if isinstance(like, PairedStatistics):
        return paired_statistics(pairs)
    return unpaired_statistics([moire for moire, _ in pairs])


def check_calibration(base: str, trials: int, n_pairs: int, size: int) -> None:
    """Refuse a search's settings in one line, before any photo is read or pair rendered."""
    from pipeline.calibration.statistics import MIN_SIDE

    if size < MIN_SIDE:  # the statistics of a smaller sample leave its widest bands empty
        raise ParamsError(f"size = {size}: must be at least {MIN_SIDE} px, as the real photos must (the widest band's "
                          "longest period, and one tile of the chroma peak search)")
    if trials < 1:
        raise ParamsError(f"trials = {trials}: must be at least 1")
    if n_pairs < 2:
        raise ParamsError(f"pairs = {n_pairs}: must be at least 2")
    # a built-in preset only: the preset written names its base, which every command reads as a built-in name
    if base not in PRESETS:
        raise ParamsError(f"base = {base!r}: choose a built-in preset ({', '.join(PRESETS)}); a preset file "
                          "cannot be a base")


def calibrate(
    real: RealStatistics, base: str = "default", trials: int = 40, size: int = 192, n_pairs: int = 24,
    seed: int = 0, on_trial: Callable[[int, float, float], None] | None = None,
) -> CalibrationResult:
    """Search KNOBS for the ranges whose synthetic sample is closest to `real`; return the best and the base's score."""
    import optuna

    check_calibration(base, trials, n_pairs, size)

    def score(overrides: dict[str, Any]) -> tuple[float, RealStatistics]:
        statistics = sample_statistics(render_sample(synthesis_config(base, overrides, size, n_pairs), seed), real)
        return statistics_distance(real, statistics), statistics

    distance_before, before = score({})
    history: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        values = {}
        for knob in KNOBS:
            if knob.low[1] > knob.low[0]:
                values[f"{knob.name}.first"] = trial.suggest_float(f"{knob.name}.first", *knob.low)
            if knob.width[1] > knob.width[0]:
                values[f"{knob.name}.width"] = trial.suggest_float(f"{knob.name}.width", *knob.width)
        distance, _ = score(knob_overrides(values))
        history.append(distance)
        if on_trial is not None:
            on_trial(trial.number, distance, min(history))
        return distance

    # ERROR: a failed trial (Ctrl-C included) is re-raised anyway; Optuna's warning would repeat it with a
    # traceback of three dozen lines
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    overrides = knob_overrides(study.best_params)
    distance_after, after = score(overrides)
    return CalibrationResult(base, overrides, real, before, after, distance_before, distance_after, trials, history)


def preset_document(result: CalibrationResult) -> dict[str, Any]:
    """The preset file's content: its base, the fitted ranges, and the settings the knobs assume."""
    sections = deep_merge({"sensor": {"auto_exposure": True, "output_pitch": [0.6, 1.15]}}, result.overrides)
    return {"base": result.base, **sections}


def real_statistics_summary(statistics: RealStatistics) -> dict[str, Any]:
    """JSON-ready statistics."""
    from pipeline.calibration.statistics import OCTAVES

    bands = list(OCTAVES)
    if isinstance(statistics, PairedStatistics):
        return {"kind": "paired", "count": statistics.count, "bands": bands,
                "residual_luma_log10_power": statistics.luma.round(4).tolist(),
                "residual_chroma_log10_power": statistics.chroma.round(4).tolist(),
                "brightness_log2_ratio": round(statistics.brightness, 4),
                "contrast_log2_ratio": round(statistics.contrast, 4)}
    return {"kind": "unpaired", "count": statistics.count, "bands": bands,
            "chroma_over_luma_log10": statistics.colour_ratio.round(4).tolist(),
            "chroma_peak_period_share": statistics.period_histogram.round(4).tolist(),
            "chroma_peak_orientation_share": statistics.orientation_histogram.round(4).tolist()}


def summary(result: CalibrationResult, skipped: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """JSON-ready report of a calibration, with the real photos it skipped (name, why)."""
    return {
        "base": result.base, "trials": result.trials, "ranges": result.overrides,
        "distance_before": round(result.distance_before, 5), "distance_after": round(result.distance_after, 5),
        "real": real_statistics_summary(result.real), "synthetic_before": real_statistics_summary(result.before),
        "synthetic_after": real_statistics_summary(result.after),
        "trial_distances": [round(d, 5) for d in result.history],
        "skipped": [{"name": name, "reason": reason} for name, reason in skipped],
    }
