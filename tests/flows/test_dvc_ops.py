"""Which input folders the stages' DVC deps do not cover: files added there would go unnoticed."""

import logging
from pathlib import Path

import psutil
import pytest
import yaml

import flows
from flows.dvc_ops import undeclared_folders, warn_undeclared_folders
from pipeline.errors import DemoireError


def test_folders_no_dep_covers_are_named_as_dvc_reads_deps(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"synthesize": {"deps": [
        "pipeline/moire", "photos", str(tmp_path / "shared")]}}}))
    monkeypatch.setattr(flows, "PROJECT_ROOT", project.resolve())
    monkeypatch.chdir(project)
    folders = [Path("photos"), Path("photos/2026"), tmp_path / "shared" / "screens", Path("more"), tmp_path / "other"]
    assert undeclared_folders("synthesize", folders) == [Path("more"), tmp_path / "other"]
    assert undeclared_folders("preprocess", folders) == []  # no such stage: nothing to say
    # an experiment's copy reads relative deps against the project too (its folders come from there)
    copy = project / ".dvc" / "tmp" / "exps" / "run1"
    copy.mkdir(parents=True)
    (copy / "dvc.yaml").write_text((project / "dvc.yaml").read_text())
    monkeypatch.chdir(copy)
    assert undeclared_folders("synthesize", [project.resolve() / "photos", project.resolve() / "more"]) == [
        project.resolve() / "more"]
    monkeypatch.chdir(tmp_path)  # no dvc.yaml here: a flow run outside a project
    assert undeclared_folders("synthesize", folders) == []


def test_the_stage_warns_about_each_folder_its_deps_miss(tmp_path, monkeypatch, caplog):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"preprocess": {"deps": ["real/fhdmi"]}}}))
    monkeypatch.setattr(flows, "PROJECT_ROOT", tmp_path.resolve())
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="flows.dvc_ops"):
        warn_undeclared_folders("preprocess", "preprocess.datasets", [Path("real/fhdmi"), Path("real/tip")], "pairs")
    assert [r.getMessage() for r in caplog.records] == [
        "preprocess.datasets: real/tip is not among the preprocess stage's deps in dvc.yaml, so pairs added there "
        "later go unnoticed by `dvc repro` and the scheduled pipeline; list it there (or run `dvc repro -f -s "
        "preprocess` after adding some)"]


def test_a_stage_started_by_a_pipeline_run_is_tagged_with_it(prefect_api, monkeypatch):
    from prefect import flow, get_client

    from flows._entry import PIPELINE_RUN_ENV, pipeline_run_tags
    from flows.dvc_ops import dvc_environment

    monkeypatch.delenv(PIPELINE_RUN_ENV, raising=False)

    @flow(name="pipeline-probe")
    def pipeline_probe() -> str:
        return dvc_environment()[PIPELINE_RUN_ENV]  # what `dvc repro` would pass to the stages

    @flow(name="stage-probe")
    def stage_probe() -> int:
        return 1

    assert PIPELINE_RUN_ENV not in dvc_environment()  # outside a flow run: nothing to name
    parent = pipeline_probe(return_state=True)
    parent_id = parent.result()
    assert parent_id == str(parent.state_details.flow_run_id)
    monkeypatch.setenv(PIPELINE_RUN_ENV, parent_id)
    with pipeline_run_tags():
        stage = stage_probe(return_state=True)
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(stage.state_details.flow_run_id).tags == [f"pipeline-run:{parent_id}"]


def dvc_project(path: Path, stages: dict[str, str]) -> Path:
    """A git repository with DVC initialised and `stages` (name → command) in its dvc.yaml."""
    import subprocess
    import sys

    path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=path, check=True)
    (path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {name: {"cmd": cmd} for name, cmd in stages.items()}}))
    return path


class Waiter(logging.Handler):
    """Records each message, and creates `go` once it sees `ready`: a stage waiting for `go` finishes only if
    its output reaches the logger while it runs."""

    def __init__(self, go: Path) -> None:
        super().__init__()
        self.go, self.messages, self.levels = go, [], {}

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.levels[record.getMessage()] = record.levelname
        if record.getMessage() == "ready":
            self.go.touch()


WAIT_FOR_GO = ("python -c \"import pathlib, sys, time; print('ready'); t = time.time(); "
               "exec('while not pathlib.Path(\\'go\\').exists() and time.time() - t < 60: time.sleep(0.05)'); "
               "sys.exit(0 if pathlib.Path('go').exists() else 3)\"")


def test_a_repro_with_echo_logs_the_stages_output_while_they_run(tmp_path, monkeypatch):
    from flows.dvc_ops import run_dvc

    after = "python -c \"print('bar 1/2\\rbar 2/2'); print('12:00:00.000 | WARNING | pipeline - careful')\""
    project = dvc_project(tmp_path / "p", {"wait": WAIT_FOR_GO, "after": after})
    monkeypatch.chdir(project)
    echo = logging.getLogger("test.dvc.echo")
    echo.setLevel(logging.INFO)
    waiter = Waiter(project / "go")
    echo.addHandler(waiter)
    try:
        output = run_dvc("repro", echo=echo)
    finally:
        echo.removeHandler(waiter)
    assert "ready" in waiter.messages  # the stage saw `go`: its line was logged while it ran
    assert "bar 2/2" in waiter.messages and not any(m.startswith("bar 1/2") for m in waiter.messages)  # its last state
    assert waiter.levels["12:00:00.000 | WARNING | pipeline - careful"] == "WARNING"  # a stage's warning stays one
    assert waiter.levels["Running stage 'wait':"] == "INFO"
    assert "ready\n" in output and "bar 1/2\rbar 2/2\n" in output  # the whole output is returned, as it came


def test_a_failing_repro_raises_with_its_last_lines_streamed_or_not(tmp_path, monkeypatch):
    from flows.dvc_ops import run_dvc

    project = dvc_project(tmp_path / "p", {
        "broken": "python -c \"import sys; print('about to fail'); sys.exit('the stage broke')\""})
    monkeypatch.chdir(project)
    for echo in (None, logging.getLogger("test.dvc.echo")):
        with pytest.raises(DemoireError, match=r"dvc repro exited with \d+:\n(.|\n)*the stage broke"):
            run_dvc("repro", echo=echo)


def test_a_streamed_repro_past_its_timeout_is_killed(tmp_path, monkeypatch):
    import subprocess
    import time

    from flows.dvc_ops import run_dvc

    project = dvc_project(tmp_path / "p", {"slow": "python -c \"import time; print('started'); time.sleep(60)\""})
    monkeypatch.chdir(project)
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_dvc("repro", timeout=8, echo=logging.getLogger("test.dvc.echo"))
    assert time.monotonic() - start < 30  # not the stage's 60 s: dvc and its stage were killed, the pipe closed


def test_a_repro_stopped_by_the_tasks_own_timeout_stops_its_stages(tmp_path, monkeypatch, prefect_api):
    import time

    from prefect import flow

    from flows.dvc_ops import dvc_repro_task

    project = dvc_project(tmp_path / "p", {"slow": "python -c \"import os, time; open('pid', 'w').write(str("
                                                    "os.getpid())); print('started', flush=True); time.sleep(90)\""})
    monkeypatch.chdir(project)

    @flow(name="repro-probe")
    def repro_probe() -> str:
        # Prefect's timeout, before run_dvc's own; 20 s: time for a loaded machine to start the stage first
        return dvc_repro_task.with_options(timeout_seconds=20)([])

    start = time.monotonic()
    state = repro_probe(return_state=True)
    assert state.is_failed() and time.monotonic() - start < 60  # not the stage's 90 s
    stage = int((project / "pid").read_text())
    assert not psutil.pid_exists(stage) or psutil.Process(stage).status() == psutil.STATUS_ZOMBIE


def test_a_process_a_stage_leaves_behind_does_not_hold_the_repro(tmp_path, monkeypatch):
    import time

    from flows.dvc_ops import run_dvc

    # a stage that starts a silent background process holding its stdout (the pipe) and ends
    leaves = ("python -c \"import subprocess; p = subprocess.Popen(['sleep', '60']); "
              "open('pid', 'w').write(str(p.pid)); print('left one behind')\"")
    project = dvc_project(tmp_path / "p", {"leaves": leaves})
    monkeypatch.chdir(project)
    start = time.monotonic()
    try:
        output = run_dvc("repro", echo=logging.getLogger("test.dvc.echo"))
        assert time.monotonic() - start < 40 and "left one behind\n" in output  # 10 s of grace, not its 60
    finally:
        psutil.Process(int((project / "pid").read_text())).kill()
