"""The ecosystem's CLI habits: --version, defaults visible in --help, choices, --json with a stable schema, -q/-v."""

from __future__ import annotations

import json
from importlib.metadata import version

import click
import numpy as np
import typer
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.io import write_png
from tests.evaluation.test_run_report import _run_outputs
from tests.test_cli import _model, blocked_registry  # noqa: F401 (a fixture)

runner = CliRunner()


def _commands(group: click.Group, path=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (typer has its own classes)
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"demoire {version('demoire')}\n"


def test_every_option_shows_its_help_and_default_in_full():
    commands = list(_commands(typer.main.get_command(app)))
    assert {" ".join(p) for p, _ in commands} >= {"predict", "evaluate", "serve", "export", "promote", "rollback",
                                                  "report", "check-params", "calibrate", "synth-report", "bench infer"}
    for path, command in commands:
        result = runner.invoke(app, [*path, "--help"], terminal_width=100)
        assert result.exit_code == 0, path
        shown = " ".join(result.output.split())
        for option in command.params:
            if getattr(option, "param_type_name", "") != "option" or option.hidden:  # typer vendors click
                continue
            assert " ".join(option.help.split()) in shown, (path, option.name)  # nothing eaten by markup
            if option.is_flag and not option.secondary_opts or option.required:
                continue
            if option.default is None:  # the help says what applies instead
                assert "[default: " in option.help, (path, option.name)
            else:
                assert "[default: " in shown.split(" ".join(option.help.split()), 1)[1][:60], (path, option.name)


def test_fixed_choices_are_checked_and_completable():
    bad = runner.invoke(app, ["predict", "x.png", "-o", "out", "--device", "gpu"])
    assert bad.exit_code == 2 and "'gpu' is not one of 'auto', 'cpu', 'cuda'" in bad.output
    layout = runner.invoke(app, ["evaluate", "--pairs", ".", "--layout", "nope"])
    assert layout.exit_code == 2 and "'nope' is not one of 'auto', 'uhdm', 'fhdmi', 'tip2018', 'generic'" in layout.output
    command = typer.main.get_command(app).commands["predict"]
    device = next(p for p in command.params if p.name == "device")
    context = click.Context(command)
    assert [item.value for item in device.shell_complete(context, "c")] == ["cpu", "cuda"]


def test_predict_json_and_quiet(tmp_path, rng):
    model = _model(tmp_path)
    write_png(tmp_path / "in" / "a.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    (tmp_path / "in" / "b.png").write_bytes(b"broken")
    args = ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", model, "--device", "cpu"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert set(report) == {"restored", "skipped", "count", "seconds", "median_seconds"} and report["count"] == 2
    assert [(r["input"], r["output"], r["width"], r["height"]) for r in report["restored"]] == [
        (str(tmp_path / "in" / "a.png"), str(tmp_path / "out" / "a.png"), 24, 20)]
    assert report["skipped"][0]["input"] == str(tmp_path / "in" / "b.png")
    assert report["skipped"][0]["reason"].startswith("cannot read image")
    quiet = runner.invoke(app, ["-q", *args, "--overwrite"])
    assert quiet.exit_code == 1 and "restored" not in quiet.stderr and "skipped" in quiet.stderr
    assert runner.invoke(app, ["-v", *args, "--overwrite"]).exit_code == 1


def test_check_params_and_report_json(tmp_path, monkeypatch, rng):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  epochs: 3\n")
    checked = runner.invoke(app, ["check-params", "--params", str(params), "--json"])
    assert checked.exit_code == 0
    body = json.loads(checked.stdout)
    assert (body["params"], body["ok"], body["values"]["train"]["epochs"]) == (str(params), True, 3)
    monkeypatch.chdir(tmp_path)
    _run_outputs(tmp_path, rng)
    reported = runner.invoke(app, ["report", "-o", "r.html", "--json"])
    assert reported.exit_code == 0 and json.loads(reported.stdout) == {"out": "r.html",
                                                                       "bytes": (tmp_path / "r.html").stat().st_size}


def test_promote_and_rollback_json(blocked_registry):  # noqa: F811 (the fixture)
    dry = runner.invoke(app, ["promote", "--model-name", "m", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    decision = json.loads(dry.stdout)
    assert (decision["model_name"], decision["dry_run"], decision["promote"]) == ("m", True, True)
    assert (decision["champion_before"], decision["champion_after"]) == ("1", "1")
    assert decision["challenger"]["version"] == "2" and decision["champion"]["version"] == "1"
    assert {"reason", "gate_set", "gate_kind", "margin_db", "ssim_tolerance"} <= set(decision)
    done = json.loads(runner.invoke(app, ["promote", "--model-name", "m", "--json"]).stdout)
    assert (done["dry_run"], done["champion_before"], done["champion_after"]) == (False, "1", "2")
    back = runner.invoke(app, ["rollback", "--model-name", "m", "--json"])
    assert back.exit_code == 0 and json.loads(back.stdout) == {"model_name": "m", "demoted": "2", "restored": "1"}


def test_a_command_stopped_by_sigterm_unwinds_like_ctrl_c_and_leaves_no_temp_file(tmp_path):
    import os
    import signal

    import pytest

    from pipeline.io import atomic_path
    from pipeline.lifetime import unwinds_on_sigterm

    @unwinds_on_sigterm
    def write() -> None:
        with atomic_path(tmp_path / "out.png") as tmp:
            tmp.write_bytes(b"half an image")
            os.kill(os.getpid(), signal.SIGTERM)  # `kill` while the temp file is there

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        write()
    assert stopped.value.code == 128 + signal.SIGTERM and list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before  # put back for whoever runs the command in-process
    writers = {" ".join(path): command.callback for path, command in _commands(typer.main.get_command(app))}
    for name in ("predict", "evaluate", "synth-report", "calibrate", "report", "export", "train", "bench fly"):
        assert getattr(writers[name], "unwinds_on_sigterm", False), f"{name} does not unwind on SIGTERM"
    assert not getattr(writers["check-params"], "unwinds_on_sigterm", False)  # what the check tells apart


def test_sigterm_and_ctrl_c_wait_for_a_native_import_and_then_unwind():
    import os
    import signal

    import pytest

    from pipeline.lifetime import signals_held, unwinds_on_sigterm

    went_on = []

    @unwinds_on_sigterm
    def import_then(signum: int) -> None:
        with signals_held():  # what import_native does around the import
            os.kill(os.getpid(), signum)
            sum(range(1000))  # bytecodes the handler, were it there, would have run in
            went_on.append(signum)

    with pytest.raises(SystemExit) as stopped:
        import_then(signal.SIGTERM)
    assert stopped.value.code == 128 + signal.SIGTERM
    # Ctrl-C as in a terminal (an xdist worker ignores SIGINT)
    runner_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            import_then(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    finally:
        signal.signal(signal.SIGINT, runner_handler)
    assert went_on == [signal.SIGTERM, signal.SIGINT]
