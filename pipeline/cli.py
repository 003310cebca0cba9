"""The `demoire` command line: check params, restore images, evaluate a model on a paired folder."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table

from pipeline.errors import DemoireError, InputDataError

app = typer.Typer(help="Demoiré pipeline: synthetic moiré data, models, evaluation.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)  # one message per line, never wrapped


def _fail(exc: DemoireError) -> None:
    """Print a user error as one line and exit 2."""
    err.print(f"[red]error:[/red] {exc}", highlight=False)
    raise typer.Exit(2)


def _load(model: str, device: str):
    """A model from a local directory (model.pt + model.json) or an MLflow `models:/` URI."""
    from pipeline.training.device import resolve_device

    torch_device = resolve_device(device)
    if model.startswith("models:/"):
        from pipeline.registry import load_registered_model

        return load_registered_model(model, torch_device), torch_device
    from pipeline.models import load_model

    return load_model(Path(model), torch_device)[0], torch_device


@app.command("check-params")
def check_params(params: Path = typer.Option(Path("params.yaml"), help="params file to validate")) -> None:
    """Validate params.yaml and print OK, or one line naming the bad key."""
    from pipeline.config import load_params

    try:
        load_params(params)
    except DemoireError as exc:
        _fail(exc)
    typer.echo(f"{params}: OK")


@app.command()
def predict(
    inputs: list[Path] = typer.Argument(..., help="image files or folders"),
    out: Path = typer.Option(..., "-o", "--out", help="output folder (file names are kept)"),
    model: str = typer.Option("data/train", help="model folder or models:/<name>@<alias>"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    overwrite: bool = typer.Option(False, help="replace existing output files"),
) -> None:
    """Restore moiré photos; unreadable files are skipped and reported (exit 1 if any)."""
    from pipeline.inference import restore_image
    from pipeline.io import read_rgb, write_png
    from pipeline.sources.folders import image_files

    try:
        net, torch_device = _load(model, device)
    except DemoireError as exc:
        _fail(exc)
    files = [p for item in inputs for p in (image_files(item) if item.is_dir() else [item])]
    failed = 0
    start = time.perf_counter()
    for path in track(files, description="restoring", console=err):
        target = out / (path.stem + ".png")
        if target.exists() and not overwrite:
            err.print(f"skipped {path}: {target} exists (use --overwrite)")
            failed += 1
            continue
        try:
            write_png(target, restore_image(net, read_rgb(path), torch_device))
        except InputDataError as exc:
            err.print(f"skipped {path}: {exc}")
            failed += 1
    err.print(f"restored {len(files) - failed} of {len(files)} images in {time.perf_counter() - start:.1f} s")
    if failed:
        raise typer.Exit(1)


@app.command()
def evaluate(
    model: str = typer.Option("data/train", help="model folder or models:/<name>@<alias>"),
    pairs: Path = typer.Option(..., help="folder with moire/ and clean/ of matching file names"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object with the means"),
) -> None:
    """PSNR / SSIM / MSE of a model and of the identity baseline on a paired folder."""
    from pipeline.data.paired_folder import read_paired_folder
    from pipeline.evaluation.evaluate import METRICS, evaluate_pairs, summarize
    from pipeline.inference import restore_tensor

    try:
        net, torch_device = _load(model, device)
        names, images, skipped = read_paired_folder(pairs)
    except DemoireError as exc:
        _fail(exc)
    for name, reason in skipped:
        err.print(f"skipped {name}: {reason}")
    summary = summarize(evaluate_pairs(lambda x: restore_tensor(net, x, torch_device), images, names))
    if as_json:
        typer.echo(json.dumps(summary))
        return
    table = Table(title=f"{pairs} ({summary['count']} pairs)")
    for column in ("metric", "model", "identity"):
        table.add_column(column)
    for metric in METRICS:
        table.add_row(metric, f"{summary[metric]:.4f}", f"{summary['identity_' + metric]:.4f}")
    Console().print(table)


def main() -> None:
    """Entry point that never shows a traceback for user errors."""
    try:
        app()
    except DemoireError as exc:
        err.print(f"error: {exc}")
        sys.exit(2)
