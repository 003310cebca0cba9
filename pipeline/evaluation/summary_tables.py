"""The rows every view of an evaluation shows (CLI, Prefect artifact, HTML report), so they agree.

A summary is `pipeline.evaluation.evaluate.summarize`'s dict, or metrics.json (the test split's at the
top level, real sets under `real`). Missing keys (a metrics.json older than tone-aligned scores) are
left out and null or NaN values (no moiré in the input, so none to remove) shown as `-`.
"""

from __future__ import annotations

import math

from pipeline.evaluation.residual_bands import BANDS

# (label, key): model and identity columns come from `key` and `identity_<key>`.
METRIC_ROWS = (("PSNR (dB)", "psnr"), ("tone-aligned PSNR (dB)", "tone_psnr"), ("SSIM", "ssim"),
               ("tone-aligned SSIM", "tone_ssim"), ("MSE", "mse"))
BAND_LABELS = {"low": "low (< 1/32 cycles/px)", "mid": "mid (1/32 to 1/8)", "high": "high (≥ 1/8)"}
SUMMARY_HEADER = ["metric", "model", "identity (moiré input)", "model − identity"]
REAL_HEADER = ["set", "pairs", "skipped", "PSNR", "identity PSNR", "tone PSNR", "identity tone PSNR", "SSIM",
               "tone SSIM", *(f"moiré removed {band}" for band in BANDS)]


def number(value: float | None, digits: int = 4, signed: bool = False) -> str:
    """A metric as text; `-` for a missing or non-finite value."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def percent(value: float | None) -> str:
    """A removed fraction as a percentage; `-` where there was nothing to remove."""
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f} %"


def summary_rows(summary: dict) -> list[list[str]]:
    """metric | model | identity | model − identity, raw and tone-aligned."""
    rows = []
    for label, key in METRIC_ROWS:
        if key not in summary:
            continue
        model, identity = summary[key], summary.get(f"identity_{key}")
        difference = None if model is None or identity is None else model - identity
        rows.append([label, number(model), number(identity), number(difference, signed=True)])
    return rows


def band_rows(summary: dict) -> list[list[str]]:
    """band | share of the input's moiré residual energy the model removed."""
    return [[BAND_LABELS[band], percent(summary[f"moire_removed_{band}"])]
            for band in BANDS if f"moire_removed_{band}" in summary]


def real_rows(real: dict[str, dict]) -> list[list[str]]:
    """One row per real set, under REAL_HEADER."""
    return [[name, str(s["count"]), str(s.get("skipped", 0)), number(s["psnr"], 2), number(s["identity_psnr"], 2),
             number(s["tone_psnr"], 2), number(s["identity_tone_psnr"], 2), number(s["ssim"]), number(s["tone_ssim"]),
             *(percent(s[f"moire_removed_{band}"]) for band in BANDS)]
            for name, s in real.items()]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = [header, ["---"] * len(header), *rows]
    return "".join("| " + " | ".join(line) + " |\n" for line in lines)


def metrics_markdown(metrics: dict) -> str:
    """The evaluate stage's metrics.json as markdown: the test split, the moiré removed, each real set."""
    parts = [f"# Evaluation on {metrics['count']} test images\n\n", markdown_table(SUMMARY_HEADER, summary_rows(metrics)),
             f"\nPSNR gain over identity: {number(metrics['psnr_gain_over_identity'], 2)} dB\n"]
    if band_rows(metrics):
        parts += ["\nMoiré removed: ", ", ".join(f"{band} {share}" for band, share in band_rows(metrics)), "\n"]
    if metrics.get("real"):
        mean = metrics["real_mean"]
        parts += ["\n## Real sets (restored as served: tiled, uint8)\n\n", markdown_table(REAL_HEADER, real_rows(metrics["real"])),
                  f"\nMeans over sets (the promotion gate's scores): PSNR {number(mean['psnr'], 2)} dB, tone-aligned "
                  f"PSNR {number(mean['tone_psnr'], 2)} dB, SSIM {number(mean['ssim'])}; gate set "
                  f"{metrics['real_gate_set'][:12]}\n"]
    return "".join(parts)
