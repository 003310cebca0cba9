"""`demoire export`: a model as ONNX or TorchScript, checked against PyTorch before it is kept."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import typer

from pipeline.cli.common import DEFAULT_MODEL, app, check_model_exists, err, fail
from pipeline.errors import DemoireError, ParamsError
from pipeline.lifetime import unwinds_on_sigterm


@app.command()
@unwinds_on_sigterm
def export(
    model: str = typer.Option(DEFAULT_MODEL, help="model folder or models:/<name>@<alias>"),
    export_format: Literal["onnx", "torchscript"] = typer.Option(..., "--format", case_sensitive=False,
                                                                     help="onnx (runs under onnxruntime) "
                                                                          "or torchscript (torch.jit)"),
    out: Path = typer.Option(..., "-o", "--out",
                             help="file to write: .onnx, or .pt / .ts / .torchscript for TorchScript"),
    overwrite: bool = typer.Option(False, help="replace an existing file"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object: file, format, opset, largest difference"),
) -> None:
    """Export with dynamic height and width (ONNX opset 17); the file is kept only if it matches PyTorch on odd sizes
    within 1e-4. Use it with `demoire predict --model FILE` (same tiling), or in a runtime of your own that also
    applies the last step a `correction_width` model needs (README, "Export: ONNX and TorchScript")."""
    from pipeline.export import CHECK_SIZES, ONNX_OPSET, TOLERANCE, ExportedModel, check_onnx_packages, export_model
    from pipeline.inference import spatial_multiple
    from pipeline.io import check_output_file, json_text
    from pipeline.model_source import load_model_and_spec, pin_model

    try:
        check_output_file(out, "-o")
        if out.exists() and not overwrite:
            raise ParamsError(f"{out} exists; choose another -o or pass --overwrite")
        check_not_a_file_of(model, out)
        if export_format == "onnx":
            check_onnx_packages()  # before a registry download or loading the model
        check_model_exists(model, exported_ok=False)
        model, registered = pin_model(model)  # the version an alias named when exported, in --json
        net, _, spec = load_model_and_spec(model, "cpu")
        if isinstance(net, ExportedModel):
            raise ParamsError(f"--model {model} is already exported; export from a model folder or a models:/ URI")
        with err.status(f"exporting {spec.name} to {export_format} and checking it"):
            # a registry version is provenance; a local folder's path (a home folder) is not shared in the file
            source = model if registered else None
            difference = export_model(net, spec, export_format, out, spatial_multiple(net), source=source,
                                      overwrite=overwrite)
    except DemoireError as exc:
        fail(exc)
    except OSError as exc:  # the disk filled up or the folder went away while writing
        fail(ParamsError(f"cannot write {out}: {exc.strerror or exc}"))
    sizes = ", ".join(f"{h}x{w}" for h, w in CHECK_SIZES)
    result = {"file": str(out), "format": export_format, "opset": ONNX_OPSET if export_format == "onnx" else None,
              "architecture": spec.name, "model": model, "alias": registered.get("alias"),
              "max_abs_difference": difference, "tolerance": TOLERANCE, "checked_sizes": [list(s) for s in CHECK_SIZES],
              "bytes": out.stat().st_size}
    if as_json:
        typer.echo(json_text(result))
        return
    opset = f", opset {ONNX_OPSET}" if export_format == "onnx" else ""
    err.note(f"wrote {out} ({export_format}{opset}, dynamic height and width, {result['bytes'] / 2**20:.1f} MiB); "
             f"largest difference from PyTorch on {sizes}: {difference:.1e} (tolerance {TOLERANCE:g})")


def check_not_a_file_of(model: str, out: Path) -> None:
    """-o may not name a file of the model folder being exported: --overwrite would replace its weights. The
    folder the name lies in counts, not where a link there points (the rename replaces the link itself)."""
    folder = Path(model)
    taken = out.exists() or out.is_symlink()
    if folder.is_dir() and taken and Path(os.path.abspath(out)).parent.resolve() == folder.resolve():
        raise ParamsError(f"-o {out} is a file of the model folder --model {model}; write the export elsewhere")
