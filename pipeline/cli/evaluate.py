"""`demoire evaluate` and `demoire synth-report`: score models and compare paired sets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.common import (DEFAULT_MODEL, FALLOFF_OPTION, MAX_SIDE_OPTION, Device, Layout, app,
                                 check_model_exists, err, fail, infer_params)
from pipeline.errors import DemoireError
from pipeline.lifetime import unwinds_on_sigterm

if TYPE_CHECKING:  # annotations only: the CLI imports torch when a command runs, not at start-up
    import torch

    from pipeline.sources.paired_datasets import PairList


def _check_csv_replaceable(csv: Path) -> None:
    """Refuse an existing --csv that is not per-image scores (a photo, notes): the finished run would replace it."""
    from pipeline.errors import InputDataError
    from pipeline.evaluation.evaluate import METRICS

    if not csv.is_file():
        return
    with csv.open("rb") as handle:
        header = handle.readline(4096)
    if header and not header.startswith(",".join(("image", *METRICS)).encode()):  # pair_row's first columns
        raise InputDataError(f"--csv {csv} exists and is not a per-image scores CSV of demoire evaluate; name "
                             "another file (an earlier run's CSV is replaced, anything else is kept)")


@app.command()
@unwinds_on_sigterm
def evaluate(
    model: str = typer.Option(DEFAULT_MODEL,
                              help="model folder, models:/<name>@<alias>, or an exported .onnx / .pt file"),
    pairs: Path = typer.Option(..., help="dataset root: moire/ + clean/ of matching names, or UHDM, FHDMi, TIP2018"),
    layout: Layout = typer.Option("auto", help="dataset layout; generic: moire/ + clean/"),
    split: str | None = typer.Option(None, help="train | val | test: only this split folder of the dataset [default: every split]"),
    include: str = typer.Option("*", help="glob on pair names, e.g. 'fhdmi_*' (generic: the file name; "
                                           "datasets: <split>/<key>)"),
    limit: int | None = typer.Option(None, help="only the first N matching pairs by name [default: all]"),
    device: Device = typer.Option("auto", help="where the model runs"),
    params: Path | None = typer.Option(None, help="params file whose infer section tiles [default: ./params.yaml if present]"),
    tile: int | None = typer.Option(None, help="tile side in pixels [default: infer.tile_size]"),
    overlap: int | None = typer.Option(None, help="pixels shared by neighbouring tiles [default: infer.tile_overlap]"),
    max_side: int | None = MAX_SIDE_OPTION,
    falloff: float | None = FALLOFF_OPTION,
    as_json: bool = typer.Option(False, "--json", help="print one JSON object with every mean (null where undefined)"),
    csv: Path | None = typer.Option(None, help="also write the per-image scores here (CSV; rows are written as pairs "
                                               "are scored, to a hidden partial file; the CSV is written from them "
                                               "once every pair is scored; the same command after a kill scores only "
                                               "the pairs not in it yet) "
                                               "[default: not written]"),
) -> None:
    """Raw and tone-aligned PSNR / SSIM, MSE and the moiré removed per frequency band, of a model and of the
    identity baseline, on a paired folder or published dataset; images are restored as the served model does
    (tiled, uint8), one pair at a time, with progress and ETA on stderr (none with `demoire -q evaluate`)."""
    from pipeline.data.paired_folder import find_paired_folder
    from pipeline.evaluation.real_sets import served_restorer
    from pipeline.evaluation.resume import scoring_digest
    from pipeline.io import check_output_file, json_text
    from pipeline.model_source import load_model_and_spec

    try:
        if csv is not None:
            check_output_file(csv, "--csv")
            _check_csv_replaceable(csv)
        cfg = infer_params(params, tile_size=tile, tile_overlap=overlap, max_side=max_side,
                           falloff=falloff)
        check_model_exists(model)
        net, torch_device, spec = load_model_and_spec(model, device)
        found = find_paired_folder(pairs, layout, split, include, limit)
        restore = served_restorer(net, torch_device, cfg)
        resume = (csv, scoring_digest(net, spec, found, {"infer": cfg.model_dump(), "device": str(torch_device)})
                  ) if csv is not None else None
        summary, skipped = _score(restore, found, pairs, resume)
    except DemoireError as exc:
        fail(exc)
    for name, reason in skipped:
        err.print(f"skipped {name}: {reason}", highlight=False)
    if skipped:
        err.print(f"skipped {len(skipped)} of {len(found.pairs) + len(found.skipped)} pairs", highlight=False)
    if as_json:
        typer.echo(json_text(summary))
    else:
        selection = "" if include == "*" else f", {include}"
        served_as = f"; longer sides over {cfg.max_side} restored at {cfg.max_side}" if cfg.max_side else ""
        served_as += f"; {cfg.falloff:g} of the screen falloff undone" if cfg.falloff else ""
        _print_summary(summary, f"{pairs} ({summary['count']} pairs{selection}; tiles of {cfg.tile_size}{served_as})")
    if skipped:
        raise typer.Exit(1)  # done, some pairs skipped (named above)


def _print_summary(summary: dict, title: str) -> None:
    """The evaluation's metrics and moiré bands as two tables."""
    from pipeline.evaluation.summary_tables import SUMMARY_HEADER, band_rows, summary_rows

    table = Table(title=title)
    for column in SUMMARY_HEADER:
        table.add_column(column)
    for row in summary_rows(summary):
        table.add_row(*row)
    bands = Table(title="moiré removed (of the input's residual)")
    for column in ("band", "removed"):
        bands.add_column(column)
    for row in band_rows(summary):
        bands.add_row(*row)
    Console(markup=False).print(table, bands)


def _score(restore: Callable[[torch.Tensor], torch.Tensor], found: PairList, root: Path,
           resume: tuple[Path, str] | None) -> tuple[dict, list[tuple[str, str]]]:
    """The summary and skipped pairs of `found`, scored one pair at a time; with `resume` (CSV, digest), rows are
    streamed towards that CSV, after those a killed run with the same digest left (pipeline.evaluation.resume)."""
    import torch

    from pipeline.evaluation.evaluate import evaluate_found_pairs
    from pipeline.evaluation.resume import PARTIAL_FLOAT_FORMAT, resumable_csv

    progress, description = None if err.notes else "off", f"scoring {root.name or root}"
    with torch.inference_mode():
        if resume is None:
            scores = evaluate_found_pairs(restore, found, root, description=description, progress=progress)
            return scores.summary, scores.skipped
        with resumable_csv(*resume) as resumed:
            if len(resumed.done):
                err.note(f"resuming: {len(resumed.done)} of {len(found.pairs)} pairs already scored in {resumed.path}")
            scores = evaluate_found_pairs(restore, found, root, resumed.path, description=description,
                                          progress=progress, done=resumed.done, float_format=PARTIAL_FLOAT_FORMAT)
            resumed.publish(scores.per_image)
    return scores.summary, scores.skipped


def _mean_std(mean: float | None, std: float | None, digits: int) -> str:
    """`mean ± std`, or `inf` where a moiré image equals its clean twin (infinite PSNR → null)."""
    return "inf" if mean is None or std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


@app.command("synth-report")
@unwinds_on_sigterm
def synth_report(
    pairs: list[Path] = typer.Option(..., help="paired folder (moire/ + clean/, or a dataset layout); repeat to compare"),
    labels: list[str] | None = typer.Option(None, "--label", help="name of each --pairs set, in order [default: the folder's name]"),
    out: Path = typer.Option(..., help="folder for the plots, CSVs and summary.json (other files in it are kept)"),
    as_json: bool = typer.Option(False, "--json", help="print summary.json as one JSON object"),
    max_pairs: int | None = typer.Option(None, help="at most this many pairs per set, evenly spread over the names [default: all]"),
    max_side: int = typer.Option(512, help="shrink residuals to this longest side before the spectrum (0: never)"),
) -> None:
    """Input PSNR/SSIM and moiré residual spectra of paired sets side by side (synthetic vs real)."""
    from pipeline.evaluation.synth_report import compare_paired_sets, set_labels
    from pipeline.io import check_output_dir, json_text

    try:
        check_output_dir(out, "--out")
        names = set_labels(pairs, labels)
        with err.status("reading pairs") as status:
            summary = compare_paired_sets(
                list(zip(names, pairs)), out, max_pairs=max_pairs, max_side=max_side,
                on_pair=lambda label, name: status.update(f"{label}: {name}"),
            )
    except DemoireError as exc:
        fail(exc)
    for paired_set in summary["sets"]:
        for skipped in paired_set["skipped_pairs"]:
            err.print(f"skipped {paired_set['label']}/{skipped['name']}: {skipped['reason']}", highlight=False)
    if as_json:
        typer.echo(json_text(summary))
    else:
        table = Table(title=f"input quality and residual spectra (max side {max_side})")
        for column in ("set", "pairs", "skipped", "PSNR dB (mean ± std)", "SSIM (mean ± std)"):
            table.add_column(column)
        for s in summary["sets"]:
            table.add_row(s["label"], str(s["count"]), str(s["skipped"]),
                          _mean_std(s["input_psnr_mean"], s["input_psnr_std"], 2),
                          _mean_std(s["input_ssim_mean"], s["input_ssim_std"], 4))
        Console(markup=False).print(table)
        typer.echo(f"plots: {out / 'input_psnr.png'}, {out / 'input_ssim.png'}, {out / 'residual_spectrum.png'}")
        typer.echo(f"data: {out / 'summary.json'}, {out / 'input_metrics.csv'}, {out / 'residual_spectrum.csv'}")
    if any(paired_set["skipped_pairs"] for paired_set in summary["sets"]):
        raise typer.Exit(1)  # done, some pairs skipped (named above)
