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
