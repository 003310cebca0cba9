"""Two tiny experiments queued with `dvc exp run --queue` and run two at a time by `dvc queue start -j 2`.

DVC runs each in a temporary copy under .dvc/tmp/exps/ (deleted afterwards) with DVC_ROOT pointing at
the project: the MLflow store, its artifacts and Prefect's state must land in the project, not the copy.
"""

import csv
import io
import json
import os
import sys
import time

import pytest

from tests.integration.project import GIT_IDENTITY, copy_project, query_store, read_registry, run

pytestmark = pytest.mark.slow
EXPERIMENTS = {"q-lr2": "0.002", "q-lr3": "0.003"}


def _wait_for_queue(repo, env, timeout_s: float = 1200) -> str:
    """Poll `dvc queue status` until nothing is queued or running; return its last output."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = run(["dvc", "queue", "status"], repo, env).stdout
        busy = [line for line in status.splitlines() if " Queued " in f" {line} " or " Running " in f" {line} "]
        if not busy or time.monotonic() > deadline:
            return status
        time.sleep(5)


def _training_runs(repo, env) -> dict:
    """The training runs of the project's store: {run id: (status, tags, val_psnr steps)}, read in a fresh process."""
    script = (
        "import json; from mlflow.tracking import MlflowClient; c = MlflowClient();"
        "e = c.get_experiment_by_name('demoire').experiment_id;"
        "rs = c.search_runs([e], filter_string=\"tags.`demoire.stage` = 'train'\");"
        "print(json.dumps({r.info.run_id: [r.info.status, r.data.tags,"
        " sorted(m.step for m in c.get_metric_history(r.info.run_id, 'val_psnr'))] for r in rs}))"
    )
    return query_store(repo, env, script)


def test_two_queued_experiments_register_in_the_project_store(tmp_path):
    repo = tmp_path / "project"
    repo.mkdir()
    copy_project(repo)
    env = {**os.environ, **GIT_IDENTITY, "PATH": f"{sys.executable.rsplit('/', 1)[0]}:{os.environ['PATH']}"}
    for name in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME"):  # the project's own store and state
        env.pop(name, None)
    run(["dvc", "repro"], repo, env)  # the baseline: queued experiments rerun train, evaluate and register only
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "baseline"], repo, env)

    for name, lr in EXPERIMENTS.items():
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", "train.epochs=1", "-S", f"train.lr={lr}"], repo, env)
    run(["dvc", "queue", "start", "-j", "2"], repo, env)
    status = _wait_for_queue(repo, env)
    assert status.count("Success") == 2, status + run(["dvc", "queue", "logs", "q-lr2"], repo, env).stdout
    # every output is cached, so each copy checks out the baseline's data and report: synthesis does not rerun
    assert "Running stage 'synthesize'" not in run(["dvc", "queue", "logs", "q-lr2"], repo, env).stdout

    registry = read_registry(repo, env)
    by_experiment = {tags.get("dvc_experiment"): number for number, tags in registry["versions"].items()}
    assert set(by_experiment) == {None, *EXPERIMENTS}  # the baseline's version and one per experiment
    training = _training_runs(repo, env)
    for name in EXPERIMENTS:
        tags = registry["versions"][by_experiment[name]]
        status, run_tags, epochs = training[tags["training_run_id"]]  # streamed live into the project's store
        assert (status, run_tags["dvc_experiment"], epochs) == ("FINISHED", name, [1])
    assert not [run_id for run_id, (status, *_) in training.items() if status == "RUNNING"]

    # the registry's decisions: every version decided once; champion is the last one promoted
    decisions = {number: tags["promotion"] for number, tags in registry["versions"].items()}
    assert set(decisions.values()) <= {"promoted", "not_promoted"} and decisions["1"] == "promoted"
    assert registry["aliases"]["champion"] == max((n for n, d in decisions.items() if d == "promoted"), key=int)

    # `dvc exp show` compares them: each experiment's metrics are read back (they are cached, data/ is not in git)
    table = run(["dvc", "exp", "show", "--csv"], repo, env).stdout
    shown = {row["Experiment"]: row for row in csv.DictReader(io.StringIO(table))}
    gain = next(column for column in next(iter(shown.values())) if column.endswith("psnr_gain_over_identity"))
    for name in EXPERIMENTS:
        assert shown[name][gain] not in ("", "!"), shown[name]

    # the synthesis report of each experiment compares too, and applying one brings back its own registration
    plots = run(["dvc", "plots", "diff", *EXPERIMENTS, "--json"], repo, env).stdout
    assert "data/synth_report/residual_spectrum.csv" in plots and "errors" not in plots, plots[-2000:]
    run(["dvc", "exp", "apply", "q-lr3"], repo, env)
    applied = json.loads((repo / "data/register/registration.json").read_text())
    assert (applied["dvc_experiment"], applied["version"]) == ("q-lr3", by_experiment["q-lr3"])

    temporary = repo / ".dvc" / "tmp"
    assert not list(temporary.rglob("mlflow.db")) and not list(temporary.rglob("mlartifacts"))
    assert not list(temporary.rglob(".prefect"))
    assert list((repo / ".prefect").glob("*.db"))  # the flows' state: in the project's PREFECT_HOME
    assert list((repo / "mlartifacts").rglob("MLmodel"))
