"""`demoire calibrate`: fit the simulator's ranges to real photos."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli.common import Layout, app, err, fail
from pipeline.errors import DemoireError, InputDataError
from pipeline.lifetime import unwinds_on_sigterm


@app.command()
@unwinds_on_sigterm
def calibrate(
    real: list[Path] = typer.Option(..., help="real moiré photos: a paired folder (any importer layout) or a folder of photos; repeat to pool"),
    out: Path = typer.Option(..., help="preset file to write (.yaml); use it with synthesize.preset: OUT"),
    report: Path | None = typer.Option(None, help="folder for summary.json and statistics.png [default: OUT's name + '-report']"),
    layout: Layout = typer.Option("auto", help="dataset layout of paired folders; generic: moire/ + clean/"),
    include: str = typer.Option("*", help="only photos or pairs whose file name matches this glob"),
    base: str = typer.Option("default", help="built-in preset the search starts from and keeps for every range it does not move"),
    trials: int = typer.Option(40, help="Optuna trials; each renders the sample once"),
    size: int = typer.Option(192, help="side of the synthetic sample's images, pixels"),
    pairs: int = typer.Option(24, help="synthetic pairs rendered per trial"),
    seed: int = typer.Option(0, help="same seed and inputs, same preset"),
    overwrite: bool = typer.Option(False, help="replace an existing preset file"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
) -> None:
    """Fit the simulator's ranges to real photos' statistics (Optuna) and write a preset file and a report."""
    from pipeline.calibration.real_sets import read_real_photos, real_statistics
    from pipeline.calibration.report import write_calibration_report, write_preset
    from pipeline.calibration.search import calibrate as run_calibration, check_calibration, summary

    from pipeline.io import check_output_dir, check_output_file, json_text

    report = report or out.with_name(out.stem + "-report")
    try:
        if out.suffix not in (".yaml", ".yml"):
            raise InputDataError(f"--out {out}: a preset file must end in .yaml or .yml")
        if out.exists() and not overwrite:
            raise InputDataError(f"{out} exists; choose another --out or pass --overwrite")
        check_output_file(out, "--out")  # before the search, not after it
        check_output_dir(report, "--report")
        check_calibration(base, trials, pairs, size)
        real_pairs, photos, skipped = read_real_photos(real, layout, include)
        for name, reason in skipped:
            err.print(f"skipped {name}: {reason}", highlight=False)
        with err.status("measuring the real photos") as status:
            target = real_statistics(real_pairs, photos)
            status.update(f"searching: {trials} trials of {pairs} pairs at {size} px")
            result = run_calibration(target, base, trials, size, pairs, seed,
                                     on_trial=lambda n, d, best: status.update(f"trial {n + 1}/{trials}: {d:.4f} (best {best:.4f})"))
        kind = "pairs" if real_pairs else "unpaired photos"
        provenance = (f"written by demoire calibrate from {len(real_pairs) or len(photos)} real {kind} in "
                      f"{', '.join(map(str, real))} (include {include!r}); base {base}, {trials} trials, seed {seed}\n"
                      f"statistics distance to the real photos: base {result.distance_before:.4f}, "
                      f"this preset {result.distance_after:.4f}")
        # the report first: a preset in place means a finished run (a run killed before it is simply run again),
        # and one another run wrote meanwhile is kept unless --overwrite
        files = write_calibration_report(report, result, skipped)
        write_preset(out, result, provenance, overwrite)
    except DemoireError as exc:
        fail(exc)
    if result.distance_after >= result.distance_before:  # few trials: none drew ranges closer than the base's
        err.print(f"warning: the calibrated preset is no closer to the real photos than its base {base} "
                  f"({result.distance_before:.4f} → {result.distance_after:.4f}): run more --trials, or keep {base}",
                  highlight=False)
    if as_json:
        typer.echo(json_text(summary(result, skipped)))
    else:
        err.note(f"distance to the real photos: base preset {result.distance_before:.4f} → calibrated "
                 f"{result.distance_after:.4f}")
        err.note(f"wrote {out} (use it with synthesize.preset: {out}); report: {', '.join(map(str, files))}")
    if skipped:
        raise typer.Exit(1)  # done, some photos skipped (named above)
