"""`demoire promote`, `rollback` and `report`: the registry's champion and the run report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.common import DEFAULT_PARAMS, STAGE_DATA, STAGE_PAIRS, Device, app, err, fail, params_or_defaults
from pipeline.errors import DemoireError
from pipeline.io import json_text
from pipeline.lifetime import unwinds_on_sigterm


def _local_gate(params, base: Path, data: Path, pairs: Path, device: str, client, name: str):
    """A loader of the local gate set (the real sets of `params`, else the test split): (hash, a model-folder scorer).
    On the test split, a warning when the champion trained on some of its sources (other split fractions)."""

    def load():
        from pipeline.errors import InputDataError
        from pipeline.evaluation.gate import SYNTHETIC, gate_pairs, local_gate
        from pipeline.registry import champion_trained_on
        from pipeline.training.device import resolve_device

        if not params.evaluate.real_sets and not Path(pairs).is_file():
            raise InputDataError(f"the gate set is the test split of the pairs index {pairs}, which is not here: run "
                                 "this in the project's checkout after `dvc repro preprocess`, or pass --data and "
                                 "--pairs (a synthetic set and its index: `demoire train` writes OUT/pairs.parquet)")
        gate = local_gate(params, data, pairs, base, resolve_device(device))
        err.note(f"re-scoring on the {gate.description}, gate set {gate.digest[:12]}")
        caution = champion_trained_on(client, name, gate_pairs(pairs)["source_id"]) if gate.kind is SYNTHETIC else None
        if caution:
            err.print(f"warning: {caution}")
        return gate.digest, gate.rescore

    return load


def _comparison_table(decision) -> Table:
    """Challenger and champion side by side on the gate set, the untouched input beside them when the decision
    knew its scores, and the rule each metric faces."""
    from pipeline.evaluation.gate import GATE_KINDS, input_floor_text

    challenger, champion, untouched = decision.challenger, decision.champion, decision.untouched
    kind = GATE_KINDS[challenger.kind]
    table = Table(title=f"gate set {challenger.gate_set[:12]} ({kind.label}; gate.kind {kind.name})")
    # two-line headers and the notes under the table: the columns fit an 80-column terminal
    columns = ["metric", f"challenger\nv{challenger.version}",
               f"champion\nv{champion.version}" if champion else "champion", "difference"]
    for column in columns + (["input"] if untouched else []) + ["rule"]:
        table.add_column(column, overflow="fold", min_width=12 if column == "metric" else None)
    floor = ", > input" if decision.rule.over_input and untouched else ""
    rules = {metric: f"≥ +{decision.rule.margin_db:g} dB{floor}" for metric in kind.margin_metrics}
    rules |= {"ssim": f"≥ -{decision.rule.ssim_tolerance:g}", "mse": "shown"}
    for metric in kind.metrics:
        ours = getattr(challenger, metric)
        theirs = getattr(champion, metric) if champion else None
        row = [kind.describe(metric), f"{ours:.4f}", "-" if theirs is None else f"{theirs:.4f}",
               "-" if theirs is None else f"{ours - theirs:+.4f}"]
        if untouched:
            row.append(f"{getattr(untouched, metric):.4f}")
        table.add_row(*row, rules[metric])
    sides = (("challenger", challenger), ("champion", champion))
    notes = [f"{role} v{side.version} re-scored on this gate set" for role, side in sides if side and side.rescored]
    notes.append(f"input floor {input_floor_text(decision.rule.over_input, untouched is not None)}")
    table.caption = "; ".join(notes)
    return table


@app.command()
def promote(
    model_name: str | None = typer.Option(None, help="registered model [default: register.model_name of --params]"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the comparison and the decision; change nothing"),
    params: Path = typer.Option(None, help="gives the margin, SSIM tolerance and real sets [default: params.yaml, "
                                           "the built-in defaults without one]"),
    data: Path = typer.Option(STAGE_DATA, help="folder the pairs index points into (for re-scoring)"),
    pairs: Path = typer.Option(STAGE_PAIRS, help="pairs index whose test split is the gate set "
                                                 "when params list no real sets"),
    device: Device = typer.Option("auto", help="where re-scoring runs"),
    allow_rolled_back: bool = typer.Option(False, help="let the gate promote a challenger `demoire rollback` took "
                                                       "champion from (it stays out otherwise)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object: the decision, both models' scores, "
                                                       "the champion before and after"),
) -> None:
    """Compare `challenger` with `champion` on the same gate set and move `champion` if the rule says so.

    The gate set is the real sets of params' evaluate.real_sets (raw and tone-aligned PSNR must both
    beat the margin), else the test split. Uses the scores recorded on the versions; only when they
    were scored on different sets are they re-scored on the local one (real sets relative to the
    params file's folder; the test split of --data, --pairs).
    """
    from contextlib import ExitStack

    from pipeline.evaluation.gate import GateRule, gate_kind
    from pipeline.registry import ModelDownloads, apply_promote, compare_challenger, connect
    from pipeline.registry.promotion import settle_interrupted_promote
    from pipeline.registry.store import transient_store_errors_as_one_line
    from pipeline.registry.transaction import RegistryLock

    with ExitStack() as held:
        downloads = held.enter_context(ModelDownloads())  # a version re-scored is not downloaded again to check it
        lock = None
        try:
            with transient_store_errors_as_one_line("demoire promote"):  # a rerun finishes what this one started
                settings = params_or_defaults(params)
                cfg = settings.registration
                name = model_name or cfg.model_name
                client = connect(Path.cwd())
                if not dry_run:  # read champion → decide → move it, with no registration in between
                    lock = held.enter_context(RegistryLock(client, name))
                    settle_interrupted_promote(client, name)  # an earlier promote's record, before this one decides
                rule = GateRule(cfg.promotion_margin_db, cfg.ssim_tolerance, cfg.require_gain_over_input)
                decision = compare_challenger(client, name, rule,
                                              _local_gate(settings, (params or DEFAULT_PARAMS).parent, data, pairs,
                                                          device, client, name),
                                              gate_kind(settings.evaluate.real_sets), allow_rolled_back, downloads)
        except DemoireError as exc:
            fail(exc)
        champion = decision.champion.version if decision.champion else None
        if not as_json:
            Console(markup=False).print(_comparison_table(decision))
            typer.echo(f"{'promote' if decision.promote else 'keep champion'}: {decision.reason}")
        if not dry_run and decision.challenger.version != champion:
            try:
                with transient_store_errors_as_one_line("demoire promote"):
                    apply_promote(client, name, decision, "demoire promote", downloads, lock)
            except DemoireError as exc:
                fail(exc)
    _show_decision(name, decision, champion, dry_run, as_json)


def _show_decision(name: str, decision, champion: str | None, dry_run: bool, as_json: bool) -> None:
    """Print what `demoire promote` decided (the table is shown before the decision is applied), or one JSON object."""
    after = decision.challenger.version if decision.promote else champion
    if as_json:
        typer.echo(json_text({"model_name": name, "dry_run": dry_run, "champion_before": champion,
                              "champion_after": champion if dry_run else after, **decision.record()}))
        return
    if dry_run:
        would = f"move to v{decision.challenger.version}" if decision.promote else (
            f"stay at v{champion}" if champion else "stay unset")
        typer.echo(f"dry run: champion would {would}; nothing changed")
    elif decision.promote and decision.challenger.version != champion:
        typer.echo(f"champion: {'v' + champion if champion else 'none'} → v{decision.challenger.version}")


@app.command()
def rollback(
    model_name: str | None = typer.Option(None, help="registered model [default: register.model_name of --params]"),
    params: Path = typer.Option(None, help="gives the default model name [default: params.yaml, the built-in "
                                           "defaults without one]"),
    as_json: bool = typer.Option(False, "--json", help='print one JSON object: {"model_name", "demoted" '
                                                       '(null: none), "restored"}'),
) -> None:
    """Move `champion` back to the version that held it before."""
    from pipeline.registry import connect, rollback_champion
    from pipeline.registry.store import transient_store_errors_as_one_line
    from pipeline.registry.transaction import RegistryLock

    try:
        settings = params_or_defaults(params)  # read even with --model-name: a named file must exist
        name = model_name or settings.registration.model_name
        client = connect(Path.cwd())
        with transient_store_errors_as_one_line("demoire rollback"), RegistryLock(client, name):
            demoted, restored = rollback_champion(client, name)  # a rerun finishes what this one started
    except DemoireError as exc:
        fail(exc)
    if as_json:
        typer.echo(json_text({"model_name": name, "demoted": demoted, "restored": restored}))
        return
    typer.echo(f"champion: {'v' + demoted if demoted else 'none'} → v{restored}")


@app.command()
@unwinds_on_sigterm
def report(
    out: Path = typer.Option(Path("report.html"), "-o", "--out", help="HTML file to write (self-contained, offline)"),
    metrics: Path = typer.Option(Path("data/evaluate/metrics.json"), help="the evaluate stage's means"),
    history: Path = typer.Option(Path("data/train/history.csv"), help="the train stage's per-epoch history"),
    grid: Path = typer.Option(Path("data/evaluate/grid.png"), help="the evaluate stage's before/after grid"),
    registration: Path = typer.Option(Path("data/register/registration.json"), help="the register stage's decision"),
    overwrite: bool = typer.Option(False, help="replace an existing -o file that is not a report demoire wrote"),
    as_json: bool = typer.Option(False, "--json", help='print one JSON object: {"out", "bytes"}'),
) -> None:
    """HTML report of the latest pipeline run: metrics, training curves, before/after pairs, registration."""
    from pipeline.evaluation.run_report import check_report_output, write_run_report
    from pipeline.io import check_output_file

    try:
        check_output_file(out, "-o")
        check_report_output(out, [metrics, history, grid, registration], overwrite)
        mismatch = write_run_report(out, metrics, history, grid, registration)
    except DemoireError as exc:
        fail(exc)
    if mismatch:
        err.print(f"warning: {registration} is not of the evaluation in {metrics} ({mismatch}); run dvc repro")
    if as_json:
        typer.echo(json_text({"out": str(out), "bytes": out.stat().st_size}))
        return
    err.note(f"wrote {out}")
