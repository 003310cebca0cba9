"""`demoire check-params`: validate params.yaml."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli.common import app, fail
from pipeline.errors import DemoireError


@app.command("check-params")
def check_params(
    params: Path = typer.Option(Path("params.yaml"), help="params file to validate"),
    show: bool = typer.Option(False, help="print every value in effect, presets resolved, as YAML"),
    as_json: bool = typer.Option(False, "--json", help='print one JSON object: {"params", "ok": true, "values"} '
                                                       '(values: every value in effect)'),
) -> None:
    """Validate params.yaml and print OK, or one line naming the bad key."""
    from pipeline.config import load_params

    try:
        resolved = load_params(params)
        check_folders(resolved, Path(params).resolve().parent, str(params))
    except DemoireError as exc:
        fail(exc)
    if as_json:
        from pipeline.io import json_text

        typer.echo(json_text({"params": str(params), "ok": True,
                              "values": resolved.model_dump(mode="json", by_alias=True)}))
        return
    if show:
        import yaml

        typer.echo(yaml.safe_dump(resolved.model_dump(mode="json", by_alias=True), sort_keys=False))
        return
    typer.echo(f"{params}: OK")


def check_folders(resolved, project_dir: Path, source: str) -> None:
    """The folders params name exist (relative ones from the params file's folder): found here, not by a stage
    that DVC has already cleared the outputs of. Their contents are the stages' to check."""
    from pipeline.errors import ParamsError

    folders = resolved.synthesize.sources.folders
    named = [(f"synthesize.sources.folders[{i}]", folder) for i, folder in enumerate(folders)]
    named += [(f"evaluate.real_sets[{i}].path", real.path) for i, real in enumerate(resolved.evaluate.real_sets)]
    for key, folder in named:
        if not (project_dir / folder).is_dir():  # an absolute path stays as it is
            raise ParamsError(f"{source}: {key} = {str(folder)!r}: no such folder ({project_dir / folder})")
