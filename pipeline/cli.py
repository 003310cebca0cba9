"""The `demoire` command line: check params, restore images, evaluate a model on a paired folder."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

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
def check_params(
    params: Path = typer.Option(Path("params.yaml"), help="params file to validate"),
    show: bool = typer.Option(False, help="print every value in effect, presets resolved, as YAML"),
) -> None:
    """Validate params.yaml and print OK, or one line naming the bad key."""
    from pipeline.config import load_params

    try:
        resolved = load_params(params)
    except DemoireError as exc:
        _fail(exc)
    if show:
        import yaml

        typer.echo(yaml.safe_dump(resolved.model_dump(mode="json", by_alias=True), sort_keys=False))
        return
    typer.echo(f"{params}: OK")


def _infer_params(params: Path | None, **options: int | None):
    """params' infer section (params.yaml when present, else defaults) with the options given on top."""
    from pipeline.config import InferParams, load_params, parse_params

    if params is None and Path("params.yaml").is_file():
        params = Path("params.yaml")
    base = load_params(params).infer if params is not None else InferParams()
    given = {key: value for key, value in options.items() if value is not None}
    return parse_params({"infer": {**base.model_dump(), **given}}, source="options").infer


def _input_images(inputs: list[str], out: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, output file) pairs from files, folders (recursively, sub-paths kept) and globs; and problems.

    Globs are expanded here too, since a quoted pattern (or a Windows shell) leaves them unexpanded.
    """
    import glob

    from pipeline.sources.folders import IMAGE_SUFFIXES, image_files

    pairs, problems = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pairs += [(f, out / f.relative_to(path).with_suffix(".png")) for f in image_files(path)]
        elif path.is_file():
            pairs.append((path, out / (path.stem + ".png")))
        elif glob.has_magic(item):
            matches = [Path(m) for m in sorted(glob.glob(item, recursive=True))]
            matches = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_SUFFIXES]
            pairs += [(m, out / (m.stem + ".png")) for m in matches]
            if not matches:
                problems.append(f"no image matches {item}")
        else:
            problems.append(f"no such file or folder: {item}")
    return pairs, problems


@app.command()
def predict(
    inputs: list[str] = typer.Argument(..., help="image files, folders (recursively) or globs such as 'photos/*.jpg'"),
    out: Path = typer.Option(..., "-o", "--out", help="output folder: NAME.png per input (sub-paths of folders kept)"),
    model: str = typer.Option("data/train", help="model folder or models:/<name>@<alias>"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    overwrite: bool = typer.Option(False, help="replace existing output files"),
    params: Path | None = typer.Option(None, help="params file whose infer section applies [default: ./params.yaml if present]"),
    tile: int | None = typer.Option(None, help="tile side in pixels [default: infer.tile_size]"),
    overlap: int | None = typer.Option(None, help="pixels shared by neighbouring tiles [default: infer.tile_overlap]"),
    max_pixels: int | None = typer.Option(None, help="skip larger images, width x height [default: infer.max_pixels]"),
) -> None:
    """Restore moiré photos of any size (tiled); unreadable, too large or existing outputs are skipped (exit 1 if any)."""
    import statistics

    from pipeline.inference import check_tiling, restore_image, spatial_multiple
    from pipeline.io import check_output_dir, read_rgb, write_png

    try:
        check_output_dir(out, "-o")
        cfg = _infer_params(params, tile_size=tile, tile_overlap=overlap, max_pixels=max_pixels)
        net, torch_device = _load(model, device)
        check_tiling(cfg.tile_size, cfg.tile_overlap, cfg.tile_batch, spatial_multiple(net))
    except DemoireError as exc:
        _fail(exc)
    pairs, problems = _input_images(inputs, out)
    for problem in problems:
        err.print(f"skipped {problem}", highlight=False)
    failed, seconds, written = len(problems), [], set()
    start = time.perf_counter()
    for path, target in track(pairs, description="restoring", console=err):
        if target in written or (target.exists() and not overwrite):
            reason = "written earlier in this run from another input" if target in written else "exists (use --overwrite)"
            err.print(f"skipped {path}: {target} {reason}", highlight=False)
            failed += 1
            continue
        began = time.perf_counter()
        try:
            image = read_rgb(path, cfg.max_pixels)
            restored = restore_image(net, image, torch_device, cfg.tile_size, cfg.tile_overlap, cfg.tile_batch)
            write_png(target, restored, overwrite)  # never over a file another run wrote meanwhile
        except InputDataError as exc:
            err.print(f"skipped {path}: {exc}", highlight=False)
            failed += 1
            continue
        except OSError as exc:  # the disk filled up, the folder went away: this image is lost, the rest may not be
            err.print(f"skipped {path}: cannot write {target} ({exc.strerror})", highlight=False)
            failed += 1
            continue
        written.add(target)
        seconds.append(time.perf_counter() - began)
    median = f", median {statistics.median(seconds):.2f} s per image" if seconds else ""
    err.print(f"restored {len(seconds)} of {len(pairs) + len(problems)} images in "
              f"{time.perf_counter() - start:.1f} s{median}", highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command()
def evaluate(
    model: str = typer.Option("data/train", help="model folder or models:/<name>@<alias>"),
    pairs: Path = typer.Option(..., help="dataset root: moire/ + clean/ of matching names, or UHDM, FHDMi, TIP2018"),
    layout: str = typer.Option("auto", help="auto | uhdm | fhdmi | tip2018 | generic (moire/ + clean/)"),
    split: str | None = typer.Option(None, help="train | val | test: only this split folder of the dataset"),
    include: str = typer.Option("*", help="glob on pair names, e.g. 'fhdmi_*' (generic: the file name; "
                                           "datasets: <split>/<key>)"),
    limit: int | None = typer.Option(None, help="only the first N matching pairs by name"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    params: Path | None = typer.Option(None, help="params file whose infer section tiles [default: ./params.yaml if present]"),
    tile: int | None = typer.Option(None, help="tile side in pixels [default: infer.tile_size]"),
    overlap: int | None = typer.Option(None, help="pixels shared by neighbouring tiles [default: infer.tile_overlap]"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object with every mean (null where undefined)"),
) -> None:
    """Raw and tone-aligned PSNR / SSIM, MSE and the moiré removed per frequency band, of a model and of the
    identity baseline, on a paired folder or published dataset; images are restored as the served model does
    (tiled, uint8)."""
    from pipeline.data.paired_folder import find_paired_folder
    from pipeline.evaluation.evaluate import evaluate_found_pairs
    from pipeline.evaluation.real_sets import served_restorer
    from pipeline.evaluation.summary_tables import SUMMARY_HEADER, band_rows, summary_rows
    from pipeline.io import json_text

    try:
        cfg = _infer_params(params, tile_size=tile, tile_overlap=overlap)
        net, torch_device = _load(model, device)
        found = find_paired_folder(pairs, layout, split, include, limit)
        restore = served_restorer(net, torch_device, cfg)
        with err.status(f"scoring {len(found.pairs)} pairs"):
            _, summary, skipped = evaluate_found_pairs(restore, found, pairs)
    except DemoireError as exc:
        _fail(exc)
    for name, reason in skipped:
        err.print(f"skipped {name}: {reason}", highlight=False)
    if skipped:
        err.print(f"skipped {len(skipped)} of {len(found.pairs) + len(found.skipped)} pairs", highlight=False)
    if as_json:
        typer.echo(json_text(summary))
        return
    selection = "" if include == "*" else f", {include}"
    table = Table(title=f"{pairs} ({summary['count']} pairs{selection}; tiles of {cfg.tile_size})")
    for column in SUMMARY_HEADER:
        table.add_column(column)
    for row in summary_rows(summary):
        table.add_row(*row)
    bands = Table(title="moiré removed (of the input's residual)")
    for column in ("band", "removed"):
        bands.add_column(column)
    for row in band_rows(summary):
        bands.add_row(*row)
    Console().print(table, bands)


def _mean_std(mean: float | None, std: float | None, digits: int) -> str:
    """`mean ± std`, or `inf` where a moiré image equals its clean twin (infinite PSNR → null)."""
    return "inf" if mean is None or std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


@app.command("synth-report")
def synth_report(
    pairs: list[Path] = typer.Option(..., help="paired folder (moire/ + clean/, or a dataset layout); repeat to compare"),
    labels: list[str] | None = typer.Option(None, "--label", help="name of each --pairs set, in order (default: folder name)"),
    out: Path = typer.Option(..., help="folder for the plots, CSVs and summary.json (other files in it are kept)"),
    as_json: bool = typer.Option(False, "--json", help="print summary.json as one JSON object"),
    max_pairs: int | None = typer.Option(None, help="at most this many pairs per set, evenly spread over the names"),
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
        _fail(exc)
    for paired_set in summary["sets"]:
        for skipped in paired_set["skipped_pairs"]:
            err.print(f"skipped {paired_set['label']}/{skipped['name']}: {skipped['reason']}", highlight=False)
    if as_json:
        typer.echo(json_text(summary))
        return
    table = Table(title=f"input quality and residual spectra (max side {max_side})")
    for column in ("set", "pairs", "skipped", "PSNR dB (mean ± std)", "SSIM (mean ± std)"):
        table.add_column(column)
    for s in summary["sets"]:
        table.add_row(s["label"], str(s["count"]), str(s["skipped"]),
                      _mean_std(s["input_psnr_mean"], s["input_psnr_std"], 2),
                      _mean_std(s["input_ssim_mean"], s["input_ssim_std"], 4))
    Console().print(table)
    typer.echo(f"plots: {out / 'input_psnr.png'}, {out / 'input_ssim.png'}, {out / 'residual_spectrum.png'}")
    typer.echo(f"data: {out / 'summary.json'}, {out / 'input_metrics.csv'}, {out / 'residual_spectrum.csv'}")


SYNTHETIC_SET_ENTRIES = {"moire", "clean", "manifest.parquet", "summary.json"}


@app.command()
def synthesize(
    out: Path = typer.Option(..., help="folder to write moire/, clean/ and manifest.parquet into"),
    preset: str = typer.Option("default", help="default | fine | coarse | document"),
    n: int = typer.Option(100, help="number of pairs"),
    size: int = typer.Option(256, help="side of each pair, pixels"),
    seed: int = typer.Option(0, help="same seed, same bytes"),
    workers: int = typer.Option(1, help="processes (the bytes do not depend on it)"),
    overwrite: bool = typer.Option(False, help="replace an existing output folder"),
    gallery: int = typer.Option(0, help="also write OUT-gallery.png beside OUT: the first N pairs, moiré | clean"),
) -> None:
    """Render an ad-hoc synthetic set outside DVC (moiré and clean images with matching names)."""
    from pipeline.config import parse_params
    from pipeline.data.synthetic import local_shard_runner, synthesize_dataset
    from pipeline.io import check_output_dir

    try:
        params = parse_params({"seed": seed, "synthesize": {"preset": preset, "n_pairs": n, "size": size, "workers": workers}},
                              source="options")
        check_output_dir(out, "--out")
        if out.exists() and not overwrite:
            raise InputDataError(f"{out} exists; choose another --out or pass --overwrite")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in SYNTHETIC_SET_ENTRIES) if out.is_dir() else []
        if foreign:  # --overwrite replaces a synthetic set, never a folder holding anything else
            raise InputDataError(f"{out} holds more than a synthetic set ({', '.join(foreign[:3])}); "
                                 "--overwrite replaces only folders demoire synthesize wrote")
        start = time.perf_counter()
        with err.status(f"rendering {n} pairs"):
            runner = local_shard_runner(params.synthesize, params.seed, workers)
            summary = synthesize_dataset(params.synthesize, params.seed, out, runner)
    except DemoireError as exc:
        _fail(exc)
    for item in summary["skipped"]:
        err.print(f"skipped source {item['path']}: {item['reason']}", highlight=False)
    err.print(f"wrote {summary['pairs']} pairs to {out} in {time.perf_counter() - start:.1f} s", highlight=False)
    if gallery:
        from pipeline.data.manifest import read_manifest, read_pair
        from pipeline.evaluation.grid import labelled_grid
        from pipeline.io import write_png

        rows = [read_pair(out / r.moire_path, out / r.clean_path) for r in read_manifest(out / "manifest.parquet")[:gallery].itertuples()]
        target = out.parent / f"{out.name}-gallery.png"
        write_png(target, labelled_grid(rows, (f"moire ({preset} preset)", "clean target"), cell=size))
        err.print(f"wrote {target}", highlight=False)


@app.command()
def calibrate(
    real: list[Path] = typer.Option(..., help="real moiré photos: a paired folder (any importer layout) or a folder of photos; repeat to pool"),
    out: Path = typer.Option(..., help="preset file to write (.yaml); use it with synthesize.preset: OUT"),
    report: Path | None = typer.Option(None, help="folder for summary.json and statistics.png [default: OUT's name + '-report']"),
    layout: str = typer.Option("auto", help="auto | uhdm | fhdmi | tip2018 | generic, for paired folders"),
    include: str = typer.Option("*", help="only photos or pairs whose file name matches this glob"),
    base: str = typer.Option("default", help="preset the search starts from and keeps for every range it does not move"),
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
    from pipeline.calibration.search import calibrate as run_calibration, summary

    report = report or out.with_name(out.stem + "-report")
    try:
        if out.suffix not in (".yaml", ".yml"):
            raise InputDataError(f"--out {out}: a preset file must end in .yaml or .yml")
        if out.exists() and not overwrite:
            raise InputDataError(f"{out} exists; choose another --out or pass --overwrite")
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
        write_preset(out, result, provenance)
        files = write_calibration_report(report, result)
    except DemoireError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(summary(result)))
        return
    typer.echo(f"distance to the real photos: base preset {result.distance_before:.4f} → calibrated {result.distance_after:.4f}")
    typer.echo(f"wrote {out} (use it with synthesize.preset: {out}); report: {', '.join(map(str, files))}")


@app.command()
def train(
    params: Path = typer.Option(Path("params.yaml"), help="params file (the train section and seed are used)"),
    data: Path = typer.Option(Path("data/synthesize"), help="folder the pairs index points into"),
    pairs: Path = typer.Option(Path("data/preprocess/pairs.parquet"), help="pairs index with train/val splits"),
    out: Path = typer.Option(Path("data/train"), help="folder for model.pt, model.json and checkpoint.pt"),
    history: Path = typer.Option(Path("data/train/history.csv"), help="per-epoch history CSV"),
) -> None:
    """Train a model as the `train` stage does; resumes from OUT/checkpoint.pt when params and data match.

    With train.processes > 1 it starts that many DDP processes under torchrun.
    """
    import logging

    from pipeline.config import load_params
    from pipeline.training.stage import run_training

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_training(load_params(params), params, data, pairs, out, history)
    except DemoireError as exc:
        _fail(exc)


def _load_params(params: Path):
    """`params` validated (the defaults when the file does not exist)."""
    from pipeline.config import Params, load_params

    return load_params(params) if params.is_file() else Params()


def _local_gate(params, base: Path, data: Path, pairs: Path, device: str):
    """A loader of the local gate set (the real sets of `params`, else the test split): (hash, a model-folder scorer)."""

    def load():
        from pipeline.evaluation.gate import local_gate
        from pipeline.training.device import resolve_device

        gate = local_gate(params, data, pairs, base, resolve_device(device))
        err.print(f"re-scoring on the {gate.description}, gate set {gate.digest[:12]}", highlight=False)
        return gate.digest, gate.rescore

    return load


def _comparison_table(decision) -> Table:
    """Challenger and champion side by side on the gate set, with the rule each metric faces."""
    from pipeline.evaluation.gate import GATE_KINDS

    challenger, champion = decision.challenger, decision.champion
    kind = GATE_KINDS[challenger.kind]
    table = Table(title=f"gate set {challenger.gate_set[:12]} ({kind.label}; gate.kind {kind.name})")
    for column in ("metric", f"challenger v{challenger.version}", f"champion v{champion.version}" if champion else "champion",
                   "difference", "rule"):
        table.add_column(column)
    rules = {metric: f"≥ +{decision.rule.margin_db:g} dB" for metric in kind.margin_metrics}
    rules |= {"ssim": f"≥ -{decision.rule.ssim_tolerance:g}", "mse": "shown"}
    for metric in kind.metrics:
        ours = getattr(challenger, metric)
        theirs = getattr(champion, metric) if champion else None
        table.add_row(kind.describe(metric), f"{ours:.4f}" + (" (re-scored)" if challenger.rescored else ""),
                      "-" if theirs is None else f"{theirs:.4f}" + (" (re-scored)" if champion.rescored else ""),
                      "-" if theirs is None else f"{ours - theirs:+.4f}", rules[metric])
    return table


@app.command()
def promote(
    model_name: str | None = typer.Option(None, help="registered model [default: register.model_name of --params]"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the comparison and the decision; change nothing"),
    params: Path = typer.Option(Path("params.yaml"), help="gives the margin, SSIM tolerance and real sets (defaults if absent)"),
    data: Path = typer.Option(Path("data/synthesize"), help="folder the pairs index points into (for re-scoring)"),
    pairs: Path = typer.Option(Path("data/preprocess/pairs.parquet"), help="pairs index whose test split is the gate set "
                                                                           "when params list no real sets"),
    device: str = typer.Option("auto", help="auto | cpu | cuda (for re-scoring)"),
) -> None:
    """Compare `challenger` with `champion` on the same gate set and move `champion` if the rule says so.

    The gate set is the real sets of params' evaluate.real_sets (raw and tone-aligned PSNR must both
    beat the margin), else the test split. Uses the scores recorded on the versions; only when they
    were scored on different sets are they re-scored on the local one (real sets relative to the
    params file's folder; the test split of --data, --pairs).
    """
    from contextlib import ExitStack

    from pipeline.evaluation.gate import GateRule, gate_kind
    from pipeline.registry import apply_decision, compare_challenger, connect
    from pipeline.registry.transaction import RegistryLock

    with ExitStack() as held:
        try:
            settings = _load_params(params)
            cfg = settings.registration
            name = model_name or cfg.model_name
            client = connect(Path.cwd())
            if not dry_run:  # read champion → decide → move it, with no registration in between
                held.enter_context(RegistryLock(client, name))
            decision = compare_challenger(client, name, GateRule(cfg.promotion_margin_db, cfg.ssim_tolerance),
                                          _local_gate(settings, params.parent, data, pairs, device),
                                          gate_kind(settings.evaluate.real_sets))
        except DemoireError as exc:
            _fail(exc)
        _show_and_apply(client, name, decision, dry_run, apply_decision)


def _show_and_apply(client, name: str, decision, dry_run: bool, apply_decision) -> None:
    """Print the comparison and the decision of `demoire promote`; apply it unless a dry run."""
    Console().print(_comparison_table(decision))
    typer.echo(f"{'promote' if decision.promote else 'keep champion'}: {decision.reason}")
    champion = decision.champion.version if decision.champion else None
    if dry_run:
        would = f"move to v{decision.challenger.version}" if decision.promote else (
            f"stay at v{champion}" if champion else "stay unset")
        typer.echo(f"dry run: champion would {would}; nothing changed")
        return
    if decision.challenger.version == champion:
        return
    apply_decision(client, name, decision, "demoire promote")
    if decision.promote:
        typer.echo(f"champion: {'v' + champion if champion else 'none'} → v{decision.challenger.version}")


@app.command()
def rollback(
    model_name: str | None = typer.Option(None, help="registered model [default: register.model_name of --params]"),
    params: Path = typer.Option(Path("params.yaml"), help="gives the default model name"),
) -> None:
    """Move `champion` back to the version that held it before."""
    from pipeline.registry import connect, rollback_champion
    from pipeline.registry.transaction import RegistryLock

    try:
        name = model_name or _load_params(params).registration.model_name
        client = connect(Path.cwd())
        with RegistryLock(client, name):
            demoted, restored = rollback_champion(client, name)
    except DemoireError as exc:
        _fail(exc)
    typer.echo(f"champion: v{demoted} → v{restored}")


@app.command()
def report(
    out: Path = typer.Option(Path("report.html"), "-o", "--out", help="HTML file to write (self-contained, offline)"),
    metrics: Path = typer.Option(Path("data/evaluate/metrics.json"), help="the evaluate stage's means"),
    history: Path = typer.Option(Path("data/train/history.csv"), help="the train stage's per-epoch history"),
    grid: Path = typer.Option(Path("data/evaluate/grid.png"), help="the evaluate stage's before/after grid"),
    registration: Path = typer.Option(Path("data/register/registration.json"), help="the register stage's decision"),
) -> None:
    """HTML report of the latest pipeline run: metrics, training curves, before/after pairs, registration."""
    from pipeline.evaluation.run_report import write_run_report
    from pipeline.io import check_output_file

    try:
        check_output_file(out, "-o")
        write_run_report(out, metrics, history, grid, registration)
    except DemoireError as exc:
        _fail(exc)
    typer.echo(f"wrote {out}")


bench_app = typer.Typer(help="Throughput benchmarks; medians of several runs, with the machine.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _report_bench(run: Callable[[], dict], as_json: bool, line: Callable[[dict], str]) -> None:
    """Run a benchmark; print its result as one JSON object or one line; user errors exit 2."""
    try:
        result = run()
    except DemoireError as exc:
        _fail(exc)
    typer.echo(json.dumps(result) if as_json else line(result))


@bench_app.command("synth")
def bench_synth(
    size: int = typer.Option(512, help="side of each pair, pixels"),
    pairs: int = typer.Option(8, help="pairs per run (CPU)"),
    repeats: int = typer.Option(5, help="runs; the median is reported"),
    device: str = typer.Option("cpu", help="cpu: one process on one core, end to end; cuda: the batched simulator"),
    batch: int = typer.Option(32, help="captures per batch (cuda)"),
    preset: str = typer.Option("default", help="default | fine | coarse | document"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Synthetic pairs per second at --size (goal on CPU: 50 pairs/s per core at 512²)."""
    from pipeline.bench import bench_synth_batched, bench_synth_cpu

    def line(result: dict) -> str:
        rate = result.get("pairs_per_s_per_core", result.get("pairs_per_s"))
        unit = "pairs/s per core" if device == "cpu" else f"pairs/s (batch {batch})"
        return f"{size}² on {device}: {rate:.2f} {unit} (median of {repeats}); {result['machine']}"

    if device == "cpu":
        _report_bench(lambda: bench_synth_cpu(size, pairs, repeats, preset), as_json, line)
    else:
        _report_bench(lambda: bench_synth_batched(size, batch, repeats, device, preset), as_json, line)


def _model_bench_options(result: dict) -> str:
    """The model and machine a model benchmark ran on, for the human-readable line."""
    return (f"{result['model']} ({result['channels']} ch, depth {result['depth']}, {result['parameters']:,} params, "
            f"{result['gmac_per_image']:.1f} GMAC/image) on {result['device']}; {result['machine']}")


@bench_app.command("train")
def bench_train(
    model: str = typer.Option("unet", help="simple | unet | mscale"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    size: str = typer.Option("256", help="patch side, or WIDTHxHEIGHT"),
    batch: int = typer.Option(None, help="images per step [default: 64 on CUDA, 8 on CPU]"),
    steps: int = typer.Option(3, help="steps per run"),
    repeats: int = typer.Option(3, help="runs; the median is reported"),
    channels: int = typer.Option(None, help="width [default: the architecture's]"),
    depth: int = typer.Option(None, help="depth [default: the architecture's]"),
    amp: str = typer.Option("auto", help="auto (bf16 on CUDA) | bf16 | off"),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model first"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (images_per_s, achieved_tflops, …)"),
) -> None:
    """Training throughput in images/s (goal for mscale on one H100: 1500 images/s at 256²)."""
    from pipeline.bench import bench_train as run_bench

    _report_bench(
        lambda: run_bench(model, device, size, batch, steps, repeats, channels, depth, amp, compile_model), as_json,
        lambda result: (f"train {result['size']}, batch {result['batch']}: {result['images_per_s']:.1f} images/s, "
                        f"{result['achieved_tflops']:.2f} TFLOP/s (median of {repeats}); {_model_bench_options(result)}"))


@bench_app.command("infer")
def bench_infer(
    model: str = typer.Option("unet", help="simple | unet | mscale"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    size: str = typer.Option("3840x2160", help="frame WIDTHxHEIGHT, or a side"),
    repeats: int = typer.Option(3, help="runs; the median is reported"),
    channels: int = typer.Option(None, help="width [default: the architecture's]"),
    depth: int = typer.Option(None, help="depth [default: the architecture's]"),
    amp: str = typer.Option("auto", help="auto (bf16 on CUDA) | bf16 | off"),
    tile: int | None = typer.Option(None, help="tile side, 0 for the whole frame at once [default: infer.tile_size]"),
    overlap: int | None = typer.Option(None, help="pixels shared by neighbouring tiles [default: infer.tile_overlap]"),
    tile_batch: int | None = typer.Option(None, help="tiles per forward pass [default: infer.tile_batch]"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (ms_per_frame, peak_memory_mb, …)"),
) -> None:
    """Latency of one whole frame, tiled as `predict` does (goal for the default model on one H100: 40 ms at 4K)."""
    from pipeline.bench import bench_infer as run_bench

    def run() -> dict:
        if tile == 0:
            return run_bench(model, device, size, repeats, channels, depth, amp)
        cfg = _infer_params(None, tile_size=tile, tile_overlap=overlap, tile_batch=tile_batch)
        return run_bench(model, device, size, repeats, channels, depth, amp, cfg.tile_size, cfg.tile_overlap, cfg.tile_batch)

    def line(result: dict) -> str:
        tiling = (f"{result['tiles']} tiles of {result['tile_size']} (overlap {result['tile_overlap']})"
                  if result["tile_size"] else "untiled")
        return (f"infer {result['size']}, {tiling}: {result['ms_per_frame']:.1f} ms/frame, peak "
                f"{result['peak_memory_mb']:.0f} MiB (median of {repeats}); {_model_bench_options(result)}")

    _report_bench(run, as_json, line)


def main() -> None:
    """Entry point that never shows a traceback for user errors."""
    try:
        app()
    except DemoireError as exc:
        err.print(f"error: {exc}")
        sys.exit(2)


if __name__ == "__main__":  # `torchrun -m pipeline.cli train` runs one DDP rank
    main()
