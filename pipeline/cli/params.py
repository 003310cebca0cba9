"""`demoire check-params`: validate params.yaml."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli.common import DEFAULT_PARAMS, app, fail
from pipeline.errors import DemoireError


@app.command("check-params")
def check_params(
    params: Path | None = typer.Option(None, help="params file to validate [default: ./params.yaml]"),
    show: bool = typer.Option(False, help="print every value in effect, presets resolved, as YAML "
                                          "(without a params file: the defaults)"),
    as_json: bool = typer.Option(False, "--json", help='print one JSON object: {"params", "ok": true, "values"} '
                                                       '(values: every value in effect)'),
) -> None:
    """Validate params.yaml and print OK, or one line naming the bad key."""
    from pipeline.config import Params, check_folders, load_params
    from pipeline.errors import InputDataError

    source = params or DEFAULT_PARAMS
    try:
        if params is None and not DEFAULT_PARAMS.is_file():
            if not show:  # a check, or a script asking for --json, is of a file: none here is an error
                raise InputDataError(f"{DEFAULT_PARAMS}: file not found here; pass --params FILE "
                                     "(`demoire check-params --show` prints the defaults)")
            source, resolved = "the defaults", Params()
        else:
            resolved = load_params(source)
            check_folders(resolved, str(source), Path(source).resolve().parent)
            check_splittable(resolved, str(source))
    except DemoireError as exc:
        fail(exc)
    if as_json:
        from pipeline.io import json_text

        typer.echo(json_text({"params": str(source), "ok": True,
                              "values": resolved.model_dump(mode="json", by_alias=True)}))
        return
    if show:
        import yaml

        typer.echo(yaml.safe_dump(resolved.model_dump(mode="json", by_alias=True), sort_keys=False))
        return
    typer.echo(f"{source}: OK")


def check_splittable(resolved, source: str) -> None:
    """The preprocess stage can split the synthetic pairs three ways by source image: said here, not by that stage
    after the synthesis (a param file's alone; a folder's photos are the stages' to count)."""
    from pipeline.errors import ParamsError

    cfg = resolved.synthesize
    if not resolved.preprocess.synthetic:
        return
    if cfg.n_pairs < 3:
        raise ParamsError(f"{source}: synthesize.n_pairs = {cfg.n_pairs}: the preprocess stage needs a pair in each "
                          "of train, val and test; allowed: 3 or more (or preprocess.synthetic: false)")
    if not cfg.sources.bundled and not cfg.sources.folders and cfg.sources.procedural < 3:
        raise ParamsError(f"{source}: synthesize.sources.procedural = {cfg.sources.procedural}: with bundled false and "
                          "no folders, the preprocess stage cannot split fewer than 3 source images into train, val "
                          "and test; allowed: 3 or more")
