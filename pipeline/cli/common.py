"""What every command module shares: the typer app, the stderr console, user-error exits, loading a model
and the infer section."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from pipeline.errors import DemoireError

app = typer.Typer(help="Demoiré pipeline: synthetic moiré data, models, evaluation.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)  # one message per line, never wrapped


def fail(exc: DemoireError) -> None:
    """Print a user error as one line and exit 2."""
    err.print(f"[red]error:[/red] {exc}", highlight=False)
    raise typer.Exit(2)


def load_net(model: str, device: str):
    """A model from a local directory (model.pt + model.json) or an MLflow `models:/` URI."""
    from pipeline.training.device import resolve_device

    torch_device = resolve_device(device)
    if model.startswith("models:/"):
        from pipeline.registry import load_registered_model

        return load_registered_model(model, torch_device), torch_device
    from pipeline.models import load_model

    return load_model(Path(model), torch_device)[0], torch_device


def infer_params(params: Path | None, **options: int | None):
    """params' infer section (params.yaml when present, else defaults) with the options given on top."""
    from pipeline.config import InferParams, load_params, parse_params

    if params is None and Path("params.yaml").is_file():
        params = Path("params.yaml")
    base = load_params(params).infer if params is not None else InferParams()
    given = {key: value for key, value in options.items() if value is not None}
    return parse_params({"infer": {**base.model_dump(), **given}}, source="options").infer


def params_or_defaults(params: Path):
    """`params` validated (the defaults when the file does not exist)."""
    from pipeline.config import Params, load_params

    return load_params(params) if params.is_file() else Params()

