"""What every command module shares: the typer app, the stderr console, user-error exits, loading a model
and the infer section."""

from __future__ import annotations

import logging
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import typer
from rich.console import Console
from rich.text import Text

from pipeline.errors import DemoireError
from pipeline.progress import mlflow_bar_as_ours, set_progress_override

# Plain help (no rich markup): markup would eat bracketed text such as "[default: infer.tile_size]".
app = typer.Typer(help="Demoiré pipeline: synthetic moiré data, models, evaluation.", no_args_is_help=True,
                  rich_markup_mode=None)

# Fixed choices as Literal types: typer turns them into click choices, checked and shell-completed.
Device = Literal["auto", "cpu", "cuda"]
# `--max-side` of predict, serve and evaluate: one option, so the three commands describe it alike.
MAX_SIDE_OPTION = typer.Option(None, "--max-side", min=0,
                               help="restore larger photos at this longer side (64 to 65536), the correction enlarged "
                                    "back (wide moiré of 4K photos); 0: full size [default: infer.max_side]")
# `--falloff` of predict, serve and evaluate, likewise.
FALLOFF_OPTION = typer.Option(None, "--falloff", min=0.0, max=1.0,
                              help="share of the screen falloff (light lost towards the photo's edges) estimated on "
                                   "each photo and undone; 0: none [default: infer.falloff]")
Layout = Literal["auto", "uhdm", "fhdmi", "tip2018", "generic"]
Architecture = Literal["simple", "unet", "mscale"]
ImageFormat = Literal["png", "jpg", "jpeg", "webp"]  # jpeg: jpg by its other name, as serve takes it


class _Status(nullcontext):
    """What `console.status` gives when notes are off: a context whose update() does nothing."""

    def __enter__(self) -> _Status:
        return self  # `with err.status(…) as status:` then status.update() (nullcontext would give None)

    def update(self, *args, **kwargs) -> None:
        pass


class _PlainStatus:
    """rich's spinner showing its text as given (rich would parse a str as markup, a path's [brackets] too)."""

    def __init__(self, status) -> None:
        self._status = status

    def __enter__(self) -> _PlainStatus:
        self._status.start()
        return self

    def __exit__(self, *exc) -> None:
        self._status.stop()

    def update(self, text: str) -> None:
        self._status.update(Text(text))


class StderrConsole(Console):
    """stderr: errors and skipped inputs always; progress, spinners and summaries (notes) unless -q."""

    notes = True

    def status(self, text: str):
        return _PlainStatus(super().status(Text(text))) if self.notes else _Status()

    def note(self, text: str) -> None:
        if self.notes:
            self.print(text, highlight=False)


# One message per line, never wrapped; no console markup: messages quote paths and extras such as demoire[pipeline]
err = StderrConsole(stderr=True, soft_wrap=True, markup=False)


def version_text() -> str:
    """`demoire X.Y.Z` of the installed distribution (or `unknown` when run from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"demoire {version('demoire')}"
    except PackageNotFoundError:
        return "demoire (version unknown: not installed)"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="print the version and exit"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="errors and skipped inputs only: no progress or summaries"),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="log the libraries' INFO messages; -vv DEBUG"),
) -> None:
    """Demoiré pipeline: synthetic moiré data, models, evaluation."""
    err.notes = not quiet
    # -q silences every progress reporter of this command, wherever it runs (re-scoring in promote, too), MLflow's
    # bar while it downloads a registered model included
    set_progress_override("off" if quiet else None)
    mlflow_bar_as_ours()
    if verbose:
        logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:  # off a terminal, progress comes as log lines: shown without -v, as a bar would be
        show_progress_lines()


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is when a record comes (test runners swap it per command)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def show_progress_lines() -> None:
    """Print pipeline.progress's INFO lines on stderr (once), whatever the root logger's level."""
    progress_log = logging.getLogger("pipeline.progress")
    if not any(getattr(handler, "demoire_progress", False) for handler in progress_log.handlers):
        handler = _CurrentStderr()
        handler.demoire_progress = True
        handler.setFormatter(logging.Formatter("%(message)s"))
        progress_log.addHandler(handler)
        progress_log.setLevel(logging.INFO)
        progress_log.propagate = False


def fail(exc: DemoireError) -> None:
    """Print a user error as one line and exit 2."""
    err.print(Text.assemble(("error:", "red"), f" {exc}"))
    raise typer.Exit(2)


DEFAULT_MODEL = "data/train"  # the train stage's output: the model commands' default
STAGE_DATA = Path("data/synthesize")  # the synthesize stage's set in a checkout
STAGE_PAIRS = Path("data/preprocess/pairs.parquet")  # and the preprocess stage's index of it


def check_model_exists(model: str, exported_ok: bool = True) -> None:
    """Say what the default model is where its folder is absent: outside a checkout, or before its first run
    (`exported_ok`: whether the command takes an exported file); and that MLflow's runs:/ URIs are not taken."""
    from pipeline.errors import ModelNotFoundError

    accepted = "FOLDER, models:/NAME@ALIAS or an exported file" if exported_ok else "FOLDER or models:/NAME@ALIAS"
    if model == DEFAULT_MODEL and not Path(model).exists():
        raise ModelNotFoundError(f"no model in {model}, the default in a checkout once `dvc repro` or `demoire train` "
                                 f"has run; pass --model {accepted}")
    if model.startswith("runs:/"):
        raise ModelNotFoundError(f"--model {model}: runs:/ URIs are not taken; pass --model {accepted}, or "
                                 "models:/NAME/VERSION (each pipeline run registers a version; `mlflow ui` lists them)")


def load_net(model: str, device: str):
    """The model (folder, `models:/` URI or exported file) and its device: `pipeline.model_source.load_any_model`."""
    from pipeline.model_source import load_any_model

    check_model_exists(model)
    return load_any_model(model, device)


DEFAULT_PARAMS = Path("params.yaml")  # read by commands given no --params, when it exists

INFER_OPTIONS = {"tile_size": "--tile", "tile_overlap": "--overlap", "tile_batch": "--tile-batch",
                 "max_pixels": "--max-pixels", "max_side": "--max-side", "falloff": "--falloff"}
"""The options of predict, evaluate, serve and bench infer that override params' infer keys."""


def infer_params(params: Path | None, **options: float | None):
    """params' infer section (params.yaml when present, else defaults) with the options given on top."""
    from pipeline.config import MAX_SIDE_RANGE, InferParams, load_params, parse_params
    from pipeline.errors import ParamsError

    if params is None and DEFAULT_PARAMS.is_file():
        params = DEFAULT_PARAMS
    base = load_params(params).infer if params is not None else InferParams()
    given = {key: value for key, value in options.items() if value is not None}
    side, (low, high) = given.get("max_side"), MAX_SIDE_RANGE
    if side == 0:  # --max-side 0: full size, as `max_side: null` in params
        given["max_side"] = None
    elif side is not None and not low <= side <= high:
        raise ParamsError(f"--max-side {side}: allowed: {low} to {high}, or 0 for full size")
    return parse_params({"infer": {**base.model_dump(), **given}}, source=str(params or "the defaults"),
                        options={f"infer.{key}": INFER_OPTIONS[key] for key in given}).infer


def params_or_defaults(params: Path | None):
    """`params` validated; without one, params.yaml when it exists, else the defaults (a file named and missing
    is an error: deciding on the defaults instead could gate on the wrong set)."""
    from pipeline.config import Params, load_params

    if params is None:
        return load_params(DEFAULT_PARAMS) if DEFAULT_PARAMS.is_file() else Params()
    return load_params(params)


