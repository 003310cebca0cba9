"""An offline HTML report of the latest pipeline run: metrics (test split and real sets), training curves,
before/after pairs, registration and the gate that decided it.

One self-contained file: images are embedded as base64 PNG data URIs and the style is inline, so it
opens without a network or the project folder.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import sys
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.errors import InputDataError, first_line
from pipeline.evaluation.gate import GATE_KINDS, REAL, SYNTHETIC, input_floor_text
from pipeline.evaluation.summary_tables import SUMMARY_HEADER, band_rows, number, summary_rows
from pipeline.io import atomic_path

GENERATOR = "demoire report"  # in each report's head: a later report may replace it without --overwrite
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 960px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; }
.promoted { color: #176e2c; } .kept { color: #8a5a00; }
"""


def read_input(path: Path, produced_by: str) -> bytes:
    """A report input's bytes, or one line naming it and the command that writes it."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InputDataError(f"{path} not found; `{produced_by}` writes it") from None
    except OSError as exc:  # a folder, no permission: not the file that command writes
        raise InputDataError(f"cannot read {path} ({exc.strerror}); `{produced_by}` writes it there") from None


def read_json_input(path: Path, produced_by: str) -> dict:
    """A report input's JSON object, or one line naming the file and the command that writes it."""
    try:
        data = json.loads(read_input(path, produced_by))
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise InputDataError(f"{path} is not the JSON object `{produced_by}` writes")
    return data


def is_quotable_number(value: object) -> bool:
    """A number the report can show: not a bool, not NaN or infinite (an edited file; evaluate writes null where a
    mean is undefined), not an integer beyond what a float holds (formatting it would overflow)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) <= sys.float_info.max if isinstance(value, int) else math.isfinite(value)


def missing_keys(data: dict, dotted_keys: list[str], numbers: bool = False) -> list[str]:
    """The dotted keys (`real_mean.psnr`) that `data` lacks or holds no value under (with `numbers`: no number)."""
    missing = []
    for dotted in dotted_keys:
        value = data
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None or numbers and not is_quotable_number(value):
            missing.append(dotted)
    return missing


def check_has_keys(path: Path, data: dict, dotted_keys: list[str], produced_by: str, numbers: bool = False) -> None:
    """One line naming the input and the keys the report needs that it lacks (an older or foreign file); with
    `numbers`, a key holding anything but a number counts as lacking."""
    missing = missing_keys(data, dotted_keys, numbers)
    if missing:
        kind = "lacks numbers under" if numbers else "lacks"
        raise InputDataError(f"{path} {kind} {', '.join(missing)}: not what `{produced_by}` writes now "
                             "(an older or edited file?); rerun it")


def check_metrics_input(path: Path, metrics: dict) -> None:
    """Refuse an evaluate stage's metrics.json lacking a key the report quotes, or holding other than a number there."""
    real = metrics.get("real")
    if real and not isinstance(real, dict):
        raise InputDataError(f"{path}: real is not a set name → scores mapping; `dvc repro evaluate` writes it")
    synthetic = ["count", "psnr", "identity_psnr"]
    real_scores = [f"real_mean.{m}" for m in ("psnr", "tone_psnr", "ssim")] if real else []
    real_scores += [f"real.{name}.count" for name in real or {}]
    real_scores += [f"real.{name}.skipped" for name, summary in (real or {}).items()
                    if isinstance(summary, dict) and "skipped" in summary]  # older sets did not count them
    gate_set = ["real_gate_set"] if real else []
    check_has_keys(path, metrics, [*synthetic, *gate_set, *real_scores], "dvc repro evaluate")
    check_has_keys(path, metrics, [*synthetic, *real_scores], "dvc repro evaluate", numbers=True)
    if real and not isinstance(metrics["real_gate_set"], str):
        raise InputDataError(f"{path}: real_gate_set is not the digest `dvc repro evaluate` writes; rerun it")


def check_registration_input(path: Path, record: dict) -> None:
    """Refuse a register stage's registration.json without a known gate kind or the scores the report compares."""
    kind = record.get("gate_kind", SYNTHETIC.name)  # registrations before real sets had no kind
    if kind not in GATE_KINDS:
        raise InputDataError(f"{path}: gate_kind {kind!r} is not one of {', '.join(GATE_KINDS)}; "
                             "`dvc repro register` writes it")
    compared = [side for side in ("champion", "untouched") if record.get(side)]
    if record.get("challenger") and compared:
        metrics = GATE_KINDS[kind].metrics
        keys = [f"{side}.{m}" for side in ("challenger", *compared) for m in metrics]
        check_has_keys(path, record, [f"{side}.version" for side in ("challenger", *compared)] + keys,
                       "dvc repro register")
        check_has_keys(path, record, keys, "dvc repro register", numbers=True)


def registration_mismatch(metrics: dict, record: dict) -> str | None:
    """Why the registration cannot be of the evaluation in metrics.json (another gate set or other scores), or None.

    A challenger scored by the register stage itself (re-scored) has no evaluation to agree with."""
    kind = GATE_KINDS[record.get("gate_kind", SYNTHETIC.name)]
    if kind is SYNTHETIC and metrics.get("real_gate_set"):
        return "it was decided on the test split, and the evaluation scored real sets, on which the gate decides"
    challenger = record.get("challenger")
    if not challenger or challenger.get("rescored"):
        return None
    means = (metrics.get("real_mean") or {}) if kind is REAL else metrics
    if kind is REAL and metrics.get("real_gate_set") != record.get("gate_set"):
        return (f"its gate set {str(record.get('gate_set'))[:12]} is not the evaluation's real sets "
                f"{str(metrics.get('real_gate_set'))[:12]}")
    for metric in kind.metrics:
        evaluated, registered = means.get(metric), challenger.get(metric)
        if evaluated is not None and registered is not None and not math.isclose(evaluated, registered, rel_tol=1e-9):
            return (f"it scores v{challenger['version']} at {kind.describe(metric)} {registered:.4f}, "
                    f"the evaluation {evaluated:.4f}")
    return None


HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_psnr")  # what the report plots and quotes


def read_history_input(path: Path) -> pd.DataFrame:
    """The train stage's per-epoch history, or one line naming the file when it is not one."""
    try:
        frame = pd.read_csv(io.BytesIO(read_input(path, "dvc repro train")))
    except (ValueError, UnicodeDecodeError):  # pandas' parser errors are ValueErrors
        frame = pd.DataFrame()
    if frame.empty or not set(HISTORY_COLUMNS) <= set(frame.columns):
        raise InputDataError(f"{path} is not the per-epoch history `dvc repro train` writes "
                             f"(a CSV with {', '.join(HISTORY_COLUMNS)} and a row per epoch)")
    return frame


def png_data_uri(png: bytes) -> str:
    """A PNG as a data URI for an <img> that needs no file beside the report."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def training_curves_png(history: pd.DataFrame) -> bytes:
    """Train/val loss and val PSNR per epoch, as PNG bytes (Agg, no global pyplot state)."""
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    loss, psnr = figure.subplots(1, 2)
    loss.plot(history.epoch, history.train_loss, marker=".", label="train")
    loss.plot(history.epoch, history.val_loss, marker=".", label="val")
    if (history.train_loss > 0).all() and (history.val_loss > 0).all():  # the psnr loss is in −dB
        loss.set_yscale("log")
    loss.set_xlabel("epoch")
    loss.set_ylabel("loss")
    loss.legend()
    psnr.plot(history.epoch, history.val_psnr, marker=".", color="C2")
    psnr.set_xlabel("epoch")
    psnr.set_ylabel("val PSNR (dB)")
    for axes in (loss, psnr):
        axes.grid(True, alpha=0.3)
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _table(header: list[str], rows: list[list[object]]) -> str:
    """An HTML table with every cell escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _registration_html(record: dict) -> str:
    """The registration decision and the scores it rests on: the challenger's against the champion's and the
    untouched input's, where the record has them."""
    promoted = record.get("promote")
    # what the register stage decided then: a later promote or rollback is the registry's, not this record's
    verdict = "promoted to champion at registration" if promoted else "kept as challenger at registration"
    if record.get("registered_earlier"):  # this run found the same model registered: nothing moved now
        verdict += " (an earlier run's: this one registered nothing)"
    parts = [f"<p class=\"{'promoted' if promoted else 'kept'}\"><b>{html.escape(str(record.get('model_name')))} "
             f"v{html.escape(str(record.get('version')))}: {verdict}</b> — {html.escape(str(record.get('reason')))}</p>"]
    kind = GATE_KINDS[record.get("gate_kind", SYNTHETIC.name)]
    challenger = record.get("challenger")
    others = [(f"champion v{side['version']}" + (" (re-scored)" if side.get("rescored") else ""), side)
              for side in [record.get("champion")] if side]
    others += [("untouched input", side) for side in [record.get("untouched")] if side]
    if challenger and others:
        header = ["metric", f"challenger v{challenger['version']}"]
        for label, _ in others:
            header += [label, "challenger − " + label.split(" (")[0]]
        rows = [[kind.describe(m), f"{challenger[m]:.4f}"]
                + [cell for _, side in others for cell in (f"{side[m]:.4f}", f"{challenger[m] - side[m]:+.4f}")]
                for m in kind.metrics]
        parts.append(_table(header, rows))
    margins = " and ".join(kind.describe(m) for m in kind.margin_metrics)
    details = [["gate kind", f"{kind.name}: decided on the {kind.label}"],
               [f"gate set ({kind.label})", record.get("gate_set", "-")],
               [f"margin (dB) on {margins}", record.get("margin_db", "-")],
               ["SSIM tolerance", record.get("ssim_tolerance", "-")]]
    floor = input_floor_text(record.get("over_input"), bool(record.get("untouched")))
    if floor:  # registrations before the floor have none
        details.append(["input floor", floor])
    details += [["MLflow run", record.get("run_id", "-")], ["tracking store", record.get("tracking_uri", "-")]]
    parts.append(_table(["", ""], details))
    return "\n".join(parts)


def earlier_registration_text(record: dict) -> str | None:
    """What a registration that found its model already registered did: nothing, the earlier decision standing
    (the champion may have moved since); None for a registration of its own."""
    earlier = record.get("registered_earlier")
    if not earlier:
        return None
    where = f"experiment {earlier['dvc_experiment']}" if earlier.get("dvc_experiment") else "outside an experiment"
    verdict = "promoted to `champion`" if record["promote"] else "kept as `challenger`"
    return (f"`{record['model_name']}` v{record['version']} was registered earlier ({where}, run {earlier['run_id']}) "
            f"for the same model and scores: nothing was registered or moved now; then it was {verdict} by the "
            f"{record['gate_kind']} gate: {record['reason']}")


def registration_markdown(record: dict) -> str:
    """The register stage's summary artifact: the decision, and the untouched input it was held against."""
    verdict = "promoted to `champion`" if record["promote"] else "kept as `challenger`"
    earlier = earlier_registration_text(record)
    lines = [f"# Registration\n\n{earlier}." if earlier else
             f"# Registration\n\n`{record['model_name']}` v{record['version']} {verdict} by the "
             f"{record['gate_kind']} gate: {record['reason']}."]
    kind, untouched = GATE_KINDS[record["gate_kind"]], record.get("untouched")
    floor = input_floor_text(record.get("over_input"), bool(untouched))
    if floor:
        held = untouched and record["over_input"]  # the scores it was held against, when it was
        scores = ", ".join(f"{kind.describe(m)} {untouched[m]:.4f}" for m in kind.margin_metrics) if held else ""
        lines.append(f"Input floor {floor}" + (f" (the input: {scores})" if scores else "") + ".")
    return "\n\n".join(lines) + "\n"


def _metrics_html(summary: dict) -> str:
    """Raw and tone-aligned metrics of model and identity, and the moiré the model removed per band."""
    parts = [_table(SUMMARY_HEADER, summary_rows(summary))]
    if band_rows(summary):
        parts.append("<p>Moiré removed (share of the input's tone-aligned residual energy): " +
                     ", ".join(html.escape(f"{band}: {share}") for band, share in band_rows(summary)) + "</p>")
    return "\n".join(parts)


def _real_sets_html(metrics: dict) -> str:
    """A section per real set, and the means over sets the real gate decides on; nothing without real sets."""
    if not metrics.get("real"):
        return ""
    mean = metrics["real_mean"]
    parts = ["<h2>Real photos</h2>",
             "<p>Restored as the served model restores them (tiled, uint8). Means over sets (the promotion gate's "
             f"scores): PSNR {number(mean['psnr'], 2)} dB, tone-aligned PSNR {number(mean['tone_psnr'], 2)} dB, "
             f"SSIM {number(mean['ssim'])}; gate set {html.escape(metrics['real_gate_set'][:12])}.</p>"]
    for name, summary in metrics["real"].items():
        parts.append(f"<h3>{html.escape(name)} ({int(summary['count'])} pairs, {int(summary.get('skipped', 0))} skipped)</h3>")
        parts.append(_metrics_html(summary))
    return "\n".join(parts)


def _mismatch_html(mismatch: str | None) -> str:
    """A warning above the registration when it is not of the evaluation the report shows."""
    if mismatch is None:
        return ""
    return (f"<p class=\"kept\"><b>Warning: this registration is not of the evaluation above</b> ({html.escape(mismatch)});"
            " run <code>dvc repro</code> so that both come from one run.</p>")


def run_report_html(metrics: dict, history: pd.DataFrame, grid_png: bytes, registration: dict,
                    mismatch: str | None = None) -> str:
    """The whole report as one HTML document; `mismatch`: why the registration is not of this evaluation."""
    last = history.iloc[-1]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="{GENERATOR}">
<title>Demoiré pipeline run</title><style>{STYLE}</style></head>
<body>
<h1>Demoiré pipeline run</h1>
<h2>Test metrics, synthetic test split ({int(metrics.get('count', 0))} pairs)</h2>
{_metrics_html(metrics)}
<p>PSNR gain over identity: {metrics['psnr'] - metrics['identity_psnr']:.2f} dB</p>
{_real_sets_html(metrics)}
<h2>Training ({len(history)} epochs)</h2>
<p>Last epoch: train loss {last.train_loss:.5f}, val loss {last.val_loss:.5f}, val PSNR {last.val_psnr:.2f} dB</p>
<img alt="training curves" src="{png_data_uri(training_curves_png(history))}">
<h2>Before / after (moiré input | restored | clean target)</h2>
<img alt="before and after grid" src="{png_data_uri(grid_png)}">
<h2>Registration</h2>
{_mismatch_html(mismatch)}
{_registration_html(registration)}
</body></html>
"""


def check_report_output(out: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse an output that is one of the report's inputs, or (without `overwrite`) an existing file that is
    not a report."""
    for path in inputs:
        if out.resolve() == path.resolve() or (out.exists() and path.exists() and out.samefile(path)):
            raise InputDataError(f"-o {out} is one of the report's inputs; choose another file")
    if out.is_file() and not overwrite:
        with out.open("rb") as head:
            written_here = GENERATOR.encode() in head.read(512)
        if not written_here:  # a report this command wrote is replaced; anything else only on request
            raise InputDataError(f"{out} exists and is not a report demoire wrote; choose another -o or pass "
                                 "--overwrite")


def check_grid_input(path: Path, png: bytes) -> None:
    """Refuse a grid that is not a whole PNG (another file, or one cut short: the report would show it broken)."""
    from PIL import Image

    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise InputDataError(f"{path} is not a PNG image; `dvc repro evaluate` writes the grid")
    try:
        with Image.open(io.BytesIO(png)) as image:
            image.load()
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for truncated or corrupt data
        raise InputDataError(f"{path} is a damaged PNG ({first_line(str(exc))}); `dvc repro evaluate` writes "
                             "the grid") from None


def write_run_report(out: Path, metrics: Path, history: Path, grid: Path, registration: Path) -> str | None:
    """Read the run's outputs and write the HTML report to `out`, atomically; return why the registration is not
    of the evaluation shown (also a warning in the report), or None."""
    metrics_data = read_json_input(metrics, "dvc repro evaluate")
    history_frame = read_history_input(history)
    grid_png = read_input(grid, "dvc repro evaluate")
    check_grid_input(grid, grid_png)
    record = read_json_input(registration, "dvc repro register")
    check_metrics_input(metrics, metrics_data)  # every input is there and parses before its content is checked
    check_registration_input(registration, record)
    mismatch = registration_mismatch(metrics_data, record)
    document = run_report_html(metrics_data, history_frame, grid_png, record, mismatch)
    with atomic_path(out) as tmp:
        tmp.write_text(document, encoding="utf-8")
    return mismatch
