"""The real `dvc repro` in a temporary git repository with tiny params, then the registry it left."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.project import make_project, read_registry, run

# Its tests share one module-scoped fixture and build on what the earlier ones left in it: `make test`
# (--dist loadfile) runs the whole module in one xdist process.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_server):
    """A copy of this repository's tracked and unignored files, committed, with tiny params."""
    repo = tmp_path_factory.mktemp("project")
    return repo, make_project(repo, prefect_server)


def test_repro_produces_outputs_metrics_and_champion(project):
    repo, env = project
    run(["dvc", "repro"], repo, env)
    for rel in ("data/synthesize/manifest.parquet", "data/preprocess/pairs.parquet", "data/train/model.pt",
                "data/train/history.csv", "data/evaluate/per_image.csv", "data/evaluate/grid.png", "dvc.lock",
                "data/synth_report/input_psnr.png", "data/synth_report/residual_spectrum.csv"):
        assert (repo / rel).is_file(), rel
    assert len(list((repo / "data/synthesize/moire").glob("*.png"))) == 12
    metrics = json.loads((repo / "data/evaluate/metrics.json").read_text())
    assert {"psnr", "ssim", "mse", "identity_psnr", "identity_ssim", "identity_mse", "count"} <= set(metrics)
    shown = run(["dvc", "metrics", "show", "--json"], repo, env).stdout
    assert "identity_psnr" in shown
    plots = run(["dvc", "plots", "show", "--json"], repo, env).stdout
    assert "data/synth_report/residual_spectrum.csv" in plots

    registration = json.loads((repo / "data/register/registration.json").read_text())
    assert registration["version"] == "1" and registration["promote"] is True
    registry = read_registry(repo, env)
    assert registry["aliases"] == {"champion": "1", "challenger": "1"}
    assert registry["versions"]["1"]["promotion"] == "promoted"
    assert float(registry["versions"]["1"]["test_psnr"]) == pytest.approx(metrics["psnr"], abs=1e-6)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    data_md5 = next(o["md5"] for o in lock["synthesize"]["outs"] if o["path"] == "data/synthesize")
    commit = run(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()
    tags = registry["versions"]["1"]
    assert (tags["data_version"], tags["git_commit"], tags["gate_set"]) == (data_md5, commit, registration["gate_set"])
    assert tags["git_dirty"] == "false"  # all committed; dvc.lock, which the repro rewrites, does not count

    second = run(["dvc", "repro"], repo, env, timeout=120)
    assert "Data and pipelines are up to date" in second.stdout


def test_experiment_variant_registers_challenger_and_gates_champion(project):
    repo, env = project
    run(["dvc", "exp", "run", "-S", "train.epochs=1"], repo, env)
    registry = read_registry(repo, env)
    v1, v2 = registry["versions"]["1"], registry["versions"]["2"]
    assert v1["gate_set"] == v2["gate_set"]  # same test split: compared on recorded scores, no re-scoring
    gain = float(v2["test_psnr"]) - float(v1["test_psnr"])
    wins = gain > 0 and gain >= 0.05 - 1e-9 and float(v2["test_ssim"]) >= float(v1["test_ssim"]) - 0.005 - 1e-9
    assert registry["aliases"]["challenger"] == "2"
    assert registry["aliases"]["champion"] == ("2" if wins else "1")
    assert v2["promotion"] == ("promoted" if wins else "not_promoted")
    assert v2["gate.champion_rescored"] == "False"


def test_real_sets_become_dvc_metrics_and_the_gate_decides_on_them(project):
    import numpy as np

    from tests.evaluation.test_real_sets import real_looking_pairs

    repo, env = project
    # Beside the project, as ../shared/real-moire is beside a checkout: two groups of one folder, one broken pair.
    photos = real_looking_pairs(repo.parent / "real-moire" / "paired", np.random.default_rng(0),
                                ["fhdmi_1.png", "fhdmi_2.png", "fhdmi_3.png", "tip_1.png", "tip_2.png"])
    (photos / "moire" / "fhdmi_3.png").write_bytes(b"\x89PNG truncated")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"]["real_sets"] = [{"name": "fhdmi", "path": "../real-moire/paired", "include": "fhdmi_*"},
                                       {"name": "tip", "path": "../real-moire/paired", "include": "tip_*"}]
    params["infer"] |= {"tile_size": 32, "tile_overlap": 8}  # 40x56 photos, restored in tiles as served
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    run(["dvc", "repro"], repo, env)

    metrics = json.loads((repo / "data/evaluate/metrics.json").read_text())
    fhdmi, tip = metrics["real"]["fhdmi"], metrics["real"]["tip"]
    assert (fhdmi["count"], fhdmi["skipped"], tip["count"], tip["skipped"]) == (2, 1, 2, 0)
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo, env).stdout)[""]["data"]
    shown = shown["data/evaluate/metrics.json"]["data"]
    assert shown["real"]["fhdmi"]["tone_psnr"] == pytest.approx(fhdmi["tone_psnr"])
    assert shown["real"]["tip"]["moire_removed_mid"] == pytest.approx(tip["moire_removed_mid"])
    assert "real.fhdmi.identity_tone_psnr" in run(["dvc", "metrics", "show"], repo, env).stdout
    assert len((repo / "data/evaluate/real/fhdmi.csv").read_text().splitlines()) == 1 + 2

    registration = json.loads((repo / "data/register/registration.json").read_text())
    assert registration["gate_kind"] == "real" and registration["gate_set"] == metrics["real_gate_set"]
    registry = read_registry(repo, env)
    tags = registry["versions"][registration["version"]]
    assert (tags["gate.kind"], tags["real_gate_set"]) == ("real", metrics["real_gate_set"])
    assert float(tags["real_fhdmi_tone_psnr"]) == pytest.approx(fhdmi["tone_psnr"], abs=1e-6)
    assert float(tags["real_psnr"]) == pytest.approx((fhdmi["psnr"] + tip["psnr"]) / 2, abs=1e-6)
    assert tags["gate.champion_rescored"] == "True"  # the champion had test-split scores only
    assert tags["promotion_reason"] == registration["reason"] and "real " in registration["reason"]
    assert (registry["aliases"]["champion"] == registration["version"]) is registration["promote"]

    second = run(["dvc", "repro"], repo, env, timeout=120)
    assert "Data and pipelines are up to date" in second.stdout


def test_a_temporary_experiment_registers_in_the_project_store(project):
    repo, env = project
    before = read_registry(repo, env)["versions"]
    run(["dvc", "exp", "run", "--temp", "-n", "temp-lr", "-S", "train.epochs=1", "-S", "train.lr=0.002"], repo, env)
    registry = read_registry(repo, env)
    added = sorted(set(registry["versions"]) - set(before), key=int)
    assert len(added) == 1 and registry["versions"][added[0]]["dvc_experiment"] == "temp-lr"
    assert registry["versions"][added[0]]["promotion"] in ("promoted", "not_promoted")
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db"))  # nothing written into the temporary copy


# (stage, kill point, promotion margin): a stage killed there is finished by running the same command again.
# The register kills follow a change of register.promotion_margin_db, as a rerun of a changed stage.
STAGE_KILLS = [("preprocess", "before:pairs.parquet", None), ("evaluate", "before:metrics.json", None),
               ("register", "register.decision_recorded", 0.06)]  # the other register points: test_registry_transaction


def test_stages_killed_mid_write_are_finished_by_a_rerun(project):
    repo, env = project
    for stage, point, margin in STAGE_KILLS:
        command = ["dvc", "repro", "-f", "-s", stage]
        if margin is not None:
            params = yaml.safe_load((repo / "params.yaml").read_text())
            params["register"]["promotion_margin_db"] = margin
            (repo / "params.yaml").write_text(yaml.safe_dump(params))
            command = ["dvc", "repro"]
        killed = subprocess.run(command, cwd=repo, env={**env, "DEMOIRE_KILL_AT": point}, capture_output=True,
                                text=True, timeout=600)
        assert killed.returncode != 0, (point, killed.stdout[-2000:])
        versions = read_registry(repo, env)["versions"]
        run(command, repo, env)
        assert "Data and pipelines are up to date" in run(["dvc", "status"], repo, env).stdout, point
        registry = read_registry(repo, env)
        assert set(registry["versions"]) == set(versions), point  # the killed registration finished, none added
        for number, tags in registry["versions"].items():  # every version decided, exactly one decision each
            assert tags.get("promotion") in ("promoted", "not_promoted"), (point, number)
        assert not list((repo / "data").rglob("*.tmp")), point  # temp outputs of the killed run are gone


def _checkpoint_epoch(path: Path) -> int:
    """Epoch of the last checkpoint written (0 before the first); checkpoints are renamed into place whole."""
    import torch

    return torch.load(path, weights_only=True)["epoch"] if path.is_file() else 0


def _session_processes(session: int) -> list[int]:
    """The live processes of a session (a command started with start_new_session), zombies left out."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # not a process, or gone meanwhile
            continue
        if int(fields[3]) == session and fields[0] != "Z":  # fields: state, ppid, pgrp, session, …
            found.append(int(entry.name))
    return found


def test_a_killed_training_resumes_on_the_next_repro(project):
    import signal
    import time

    import pandas as pd

    repo, env = project
    params_path = repo / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["train"]["epochs"] = 80
    params_path.write_text(yaml.safe_dump(params))
    checkpoint = repo / "data/train/checkpoint.pt"
    killed = subprocess.Popen(["dvc", "repro", "train"], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while _checkpoint_epoch(checkpoint) < 3 and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        killed.kill()  # dvc alone, as a scheduler stopping its job might: the stage must not go on as an orphan
        killed.wait()
    try:
        deadline = time.monotonic() + 60
        while _session_processes(killed.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        # before: the training went on to epoch 80 with no dvc to record it
        assert not _session_processes(killed.pid), "the stage outlived the dvc that started it"
    finally:
        for pid in _session_processes(killed.pid):
            os.kill(pid, signal.SIGKILL)
    killed_at = _checkpoint_epoch(checkpoint)
    assert 3 <= killed_at < 80, "the run was not killed mid-training"

    rerun = run(["dvc", "repro", "train"], repo, env)
    assert f"resuming from data/train/checkpoint.pt after epoch {killed_at}" in rerun.stdout + rerun.stderr
    history = pd.read_csv(repo / "data/train/history.csv")
    assert list(history.epoch) == list(range(1, 81)) and _checkpoint_epoch(checkpoint) == 80
    params_path.write_text(original)
    run(["dvc", "repro"], repo, env)  # leave the project as found: the run-cache brings the earlier model back
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo, env).stdout


def test_invalid_params_stop_repro_with_one_line_and_keep_the_outputs(project):
    repo, env = project
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["synthesize"]["optics"] = {"distance_mm": [500.0, 300.0]}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "synthesize.optics.distance_mm = [500.0, 300.0]: range minimum 500.0 is greater than its maximum 300.0" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    # persist outputs: the last good data set, its report and the model are still there
    for rel in ("data/synthesize/manifest.parquet", "data/synth_report/summary.json", "data/train/model.pt"):
        assert (repo / rel).is_file(), rel
    params = yaml.safe_load(original)
    params["train"]["epochs"] = 0
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "train.epochs = 0" in result.stderr + result.stdout
    assert (repo / "data/train/model.pt").is_file() and (repo / "data/train/model.json").is_file()
    (repo / "params.yaml").write_text(original)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo, env).stdout
