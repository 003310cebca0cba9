"""`demoire synthesize`: an ad-hoc synthetic set outside DVC."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from pipeline.cli.common import app, err, fail
from pipeline.errors import DemoireError, InputDataError


@app.command()
def synthesize(
    out: Path = typer.Option(..., help="folder to write moire/, clean/ and manifest.parquet into"),
    preset: str = typer.Option("default", help="default | fine | coarse | document | classic, or a preset file (.yaml)"),
    n: int = typer.Option(100, help="number of pairs"),
    size: int = typer.Option(256, help="side of each pair, pixels"),
    seed: int = typer.Option(0, help="same seed, same bytes"),
    workers: int = typer.Option(1, help="processes (the bytes do not depend on it)"),
    overwrite: bool = typer.Option(False, help="replace an existing output folder"),
    gallery: int = typer.Option(0, min=0, help="also write OUT-gallery.png beside OUT: the first N pairs, moiré | clean"),
    layer_bank: int = typer.Option(None, "--layer-bank", help="reuse N moiré layers (synthesize.moire_layer_bank): "
                                   "about twice as fast, less varied [default: none, each pair its own]"),
) -> None:
    """Render an ad-hoc synthetic set outside DVC (moiré and clean images with matching names)."""
    from pipeline.config import parse_params
    from pipeline.data.synthetic import check_replaceable_set, local_shard_runner, synthesize_dataset

    try:
        params = parse_params({"seed": seed, "synthesize": {"preset": preset, "n_pairs": n, "size": size, "workers": workers,
                                                            "moire_layer_bank": layer_bank}}, source="options",
                              options={"seed": "--seed", "synthesize.preset": "--preset", "synthesize.n_pairs": "--n",
                                       "synthesize.size": "--size", "synthesize.workers": "--workers",
                                       "synthesize.moire_layer_bank": "--layer-bank"})
        check_replaceable_set(out, overwrite)
        gallery_path = out.parent / f"{out.name}-gallery.png"
        if gallery and gallery_path.is_dir():  # refused before rendering, not after
            raise InputDataError(f"{gallery_path} is a folder: --gallery writes its image there; choose another --out")
        if gallery and gallery_path.exists() and not overwrite:
            raise InputDataError(f"{gallery_path} exists (use --overwrite to replace it)")
        start = time.perf_counter()
        # synthesize_dataset shows its own progress bar (a status spinner around it would clash with it)
        runner = local_shard_runner(params.synthesize, params.seed, workers)
        summary = synthesize_dataset(params.synthesize, params.seed, out, runner)
    except DemoireError as exc:
        fail(exc)
    for item in summary["skipped"]:
        err.print(f"skipped source {item['path']}: {item['reason']}", highlight=False)
    err.note(f"wrote {summary['pairs']} pairs to {out} in {time.perf_counter() - start:.1f} s")
    if gallery:
        from pipeline.data.manifest import read_manifest, read_pair
        from pipeline.evaluation.grid import labelled_grid
        from pipeline.io import write_png

        rows = [read_pair(out / r.moire_path, out / r.clean_path) for r in read_manifest(out / "manifest.parquet")[:gallery].itertuples()]
        target = gallery_path
        try:
            write_png(target, labelled_grid(rows, (f"moire ({preset} preset)", "clean target"), cell=size), overwrite)
        except (DemoireError, OSError) as exc:
            fail(exc if isinstance(exc, DemoireError) else InputDataError(f"cannot write {target}: {exc.strerror}"))
        err.note(f"wrote {target}")
