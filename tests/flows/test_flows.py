"""Flows against a real Prefect server."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from flows.preprocess import preprocess_flow
from flows.synthesize import synthesize_flow
from pipeline.errors import InputDataError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_synthesis_is_byte_identical_for_any_worker_count(tmp_path, tiny_params, prefect_api):
    one = synthesize_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))
    two = synthesize_flow.with_options(task_runner=ProcessPoolTaskRunner(max_workers=2))
    summary = one(params=tiny_params, out=tmp_path / "one", report=tmp_path / "report")
    two(params=tiny_params.model_copy(update={"synthesize": tiny_params.synthesize.model_copy(update={"workers": 2})}),
        out=tmp_path / "two")
    assert summary["pairs"] == 12 and summary["sources_skipped"] == 0
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) == 2 * 12 + 2
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel
    assert not list(tmp_path.glob(".*tmp"))  # no staging folders left behind
    metrics = pd.read_csv(tmp_path / "report" / "input_metrics.csv")
    assert len(metrics) == 12 and metrics.input_psnr.between(5, 50).all()
    assert (tmp_path / "report" / "residual_spectrum.png").stat().st_size > 0

    summary = preprocess_flow(tiny_params, tmp_path / "one", tmp_path / "pairs.parquet", tmp_path / "summary.json")
    frame = pd.read_parquet(tmp_path / "pairs.parquet")
    assert sum(summary["pairs"].values()) == 12 and summary["rejected_pairs"] == 0
    assert (frame.groupby("source_id").split.nunique() == 1).all()


def test_invalid_params_fail_fast_with_one_line_and_write_nothing(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("synthesize:\n  n_pairs: -5\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "flows.synthesize", "--params", str(params), "--out", str(out),
         "--report", str(tmp_path / "report")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {params}: synthesize.n_pairs = -5: Input should be greater than or equal to 1")
    assert not out.exists() and not (tmp_path / "report").exists()


@pytest.mark.slow
def test_a_killed_synthesize_stage_leaves_no_process_pool_worker_behind(tmp_path, tiny_raw, prefect_api):
    import psutil
    import yaml

    tiny_raw["synthesize"]["workers"] = 2
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_raw))
    out = tmp_path / "out"
    marker = f"{os.getpid()}-{time.time_ns()}"  # inherited by every process the stage starts
    killed = subprocess.run([sys.executable, "-m", "flows.synthesize", "--params", str(params), "--out", str(out),
                             "--report", str(tmp_path / "report")],
                            cwd=ROOT, capture_output=True, text=True, timeout=180,
                            env={**os.environ, "DEMOIRE_KILL_AT": "synthesize.shard_done", "KILLED_STAGE": marker})
    assert killed.returncode == -9, killed.stderr[-2000:]

    def left_behind() -> list[str]:
        """Command lines of the processes the killed stage started (pool workers and their helpers) still alive."""
        found = []
        for process in psutil.process_iter(["cmdline"]):
            try:
                if process.environ().get("KILLED_STAGE") == marker:
                    found.append(" ".join(process.info["cmdline"] or []))
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        return found

    deadline = time.monotonic() + 20
    while left_behind() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left_behind() == [], "process pool workers outlived the killed stage"
    assert not out.exists()


@pytest.mark.slow
def test_synthesis_on_a_dask_cluster_gives_the_same_bytes(tmp_path, tiny_params, prefect_api):
    from distributed import LocalCluster

    from flows.synthesize import task_runner

    local = tiny_params.synthesize
    synthesize_flow.with_options(task_runner=task_runner(local))(params=tiny_params, out=tmp_path / "local")
    # Worker processes start after prefect_api set PREFECT_API_URL, so they report to the same server.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        on_dask = local.model_copy(update={"dask_address": cluster.scheduler_address, "workers": 2})
        assert type(task_runner(on_dask)).__name__ == "DaskTaskRunner"
        params = tiny_params.model_copy(update={"synthesize": on_dask})
        synthesize_flow.with_options(task_runner=task_runner(on_dask))(params=params, out=tmp_path / "dask")
    files = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.png"))
    assert len(files) == 2 * 12
    for rel in [*files, Path("manifest.parquet")]:
        assert (tmp_path / "local" / rel).read_bytes() == (tmp_path / "dask" / rel).read_bytes(), rel


def test_a_dask_address_where_nothing_answers_is_one_line(tiny_params):
    from flows.synthesize import task_runner
    from tests.conftest import _free_port

    address = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(InputDataError, match=rf"^synthesize.dask_address = {address}: no Dask scheduler answers "
                                             r"there \(.*\); start one \(`dask scheduler`, then `dask worker "):
        task_runner(tiny_params.synthesize.model_copy(update={"dask_address": address}))


def test_a_worker_with_other_rendering_code_refuses_to_render(monkeypatch):
    from pipeline.data import synthetic

    loaded = synthetic.renderer_digest()
    synthetic.check_renderer(loaded)
    with pytest.raises(InputDataError, match=r"^a worker on .* renders with other code or library versions than this "
                                             r"run \(its pipeline: .*\): start the Dask workers from the same checkout"):
        synthetic.check_renderer("0" * 64)
    # files changed after a long-lived worker imported them: it runs what it loaded, and says so
    monkeypatch.setattr(synthetic, "renderer_digest", lambda: "the files as edited since")
    synthetic.check_renderer(loaded)
    with pytest.raises(InputDataError, match="renders with other code"):
        synthetic.check_renderer("the files as edited since")


@pytest.mark.slow
def test_preprocess_can_index_real_pairs_instead_of_synthetic_ones(tmp_path, tiny_raw, prefect_api):
    from pipeline.config import parse_params
    from pipeline.io import write_png

    rng = np.random.default_rng(0)
    datasets = []
    for split in ("train", "val", "test"):
        for name in ("a.png", "b.png"):
            # as large as the training patch (tiny_raw: 32), or preprocess rejects them
            for side in ("moire", "clean"):
                write_png(tmp_path / split / side / name, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        datasets.append({"path": str(tmp_path / split), "layout": "generic", "split": split})
    synthetic = tmp_path / "synthetic"
    synthesize_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))(
        params=parse_params(tiny_raw), out=synthetic)
    params = parse_params({**tiny_raw, "preprocess": {"synthetic": False, "datasets": datasets}})
    summary = preprocess_flow(params, synthetic, tmp_path / "pairs.parquet", tmp_path / "summary.json")
    frame = pd.read_parquet(tmp_path / "pairs.parquet")
    assert summary["pairs"] == {"train": 2, "val": 2, "test": 2} and summary["imported_pairs"] == 6
    assert frame.moire_path.map(lambda p: Path(p).is_absolute()).all()


@pytest.mark.slow
def test_evaluate_flow_scores_the_test_split_and_every_real_set(tmp_path, tiny_raw, prefect_api, rng):
    import json

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from flows.evaluate import evaluate_flow
    from pipeline.config import parse_params
    from pipeline.errors import InputDataError
    from pipeline.io import json_ready
    from pipeline.models import ModelSpec, build_model, save_model
    from tests.evaluation.test_real_sets import SUMMARY_KEYS, real_looking_pairs
    from tests.test_registry import _gate_data

    data, pairs = _gate_data(tmp_path, rng)
    real_looking_pairs(tmp_path / "real", rng, ["fhdmi_1.png", "fhdmi_2.png", "fhdmi_3.png", "tip_1.png"])
    (tmp_path / "real" / "clean" / "fhdmi_3.png").write_bytes(b"not a png")
    spec = ModelSpec("unet", 8, 2)
    save_model(build_model(spec, seed=0), spec, tmp_path / "model")
    real_sets = [{"name": "fhdmi", "path": "real", "include": "fhdmi_*"},  # relative to the project folder
                 {"name": "tip", "path": str(tmp_path / "real"), "include": "tip_*"}]
    tiny_raw["evaluate"] |= {"device": "cpu", "real_sets": real_sets}
    tiny_raw["infer"] = {"tile_size": 32, "tile_overlap": 8}  # 40x56 photos: restored in tiles
    params = parse_params(tiny_raw)
    out = tmp_path / "out"
    paths = dict(model_dir=tmp_path / "model", data=data, pairs_index=pairs, out=out / "per_image.csv",
                 metrics=out / "metrics.json", grid=out / "grid.png", real_out=out / "real")
    summary = evaluate_flow(params, **paths, project_dir=tmp_path)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json_ready(summary)  # NaN (no moiré in a band of the input) written as null
    assert metrics["count"] == 3 and {"tone_psnr", "identity_tone_ssim", "moire_removed_mid"} <= set(metrics)
    assert set(metrics["real"]) == {"fhdmi", "tip"}
    assert set(metrics["real"]["fhdmi"]) == SUMMARY_KEYS
    assert (metrics["real"]["fhdmi"]["count"], metrics["real"]["fhdmi"]["skipped"]) == (2, 1)
    assert metrics["real_mean"]["tone_psnr"] == pytest.approx(
        (metrics["real"]["fhdmi"]["tone_psnr"] + metrics["real"]["tip"]["tone_psnr"]) / 2)
    assert len(metrics["real_gate_set"]) == 64
    assert sorted(p.name for p in (out / "real").iterdir()) == ["fhdmi.csv", "index.json", "tip.csv"]
    assert json.loads((out / "real" / "index.json").read_text()) == {
        "fhdmi": {"csv": "fhdmi.csv", "pairs": 2, "skipped": 1}, "tip": {"csv": "tip.csv", "pairs": 1, "skipped": 0}}
    per_image = pd.read_csv(out / "real" / "fhdmi.csv")
    assert list(per_image.image) == ["fhdmi_1.png", "fhdmi_2.png"] and "identity_tone_psnr" in per_image
    assert per_image.psnr.mean() == pytest.approx(metrics["real"]["fhdmi"]["psnr"], abs=1e-5)
    with get_client(sync_client=True) as client:  # the newest: the session's server holds other tests' summaries
        artifact = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["evaluate-summary"])),
                                         sort=ArtifactSort.CREATED_DESC, limit=1)[0]
    assert "## Real sets" in artifact.data and "| fhdmi | 2 | 1 |" in artifact.data and "| tip | 1 | 0 |" in artifact.data
    assert "skipped fhdmi/fhdmi_3.png: cannot read image" in artifact.data
    # the test split is scored as served, and as the register stage re-scores a champion on it
    from pipeline.evaluation.gate import load_gate_set, score_on_gate
    from pipeline.models import load_model

    cpu = torch.device("cpu")
    rescored = score_on_gate(load_model(tmp_path / "model", cpu)[0], load_gate_set(pairs, data), cpu, params.infer)
    keys = [key for metric in ("psnr", "ssim", "mse") for key in (metric, f"identity_{metric}")]
    assert rescored == {key: metrics[key] for key in keys}
    assert len(pd.read_csv(out / "per_image.csv")) == 3 and metrics["skipped"] == 0

    # A set none of whose pairs is readable fails after the test split was scored: no CSV is replaced.
    before_csv = (out / "per_image.csv").read_bytes()
    (tmp_path / "real" / "moire" / "tip_1.png").write_bytes(b"")
    with pytest.raises(InputDataError, match=r"^evaluate.real_sets\[1\] \(tip\): none of the 1 selected pairs"):
        evaluate_flow(params, **paths, project_dir=tmp_path)
    assert (out / "per_image.csv").read_bytes() == before_csv and sorted(p.name for p in out.iterdir()) == [
        "grid.png", "metrics.json", "per_image.csv", "real"]
    real_looking_pairs(tmp_path / "real", rng, ["tip_1.png"])

    # A set that matches nothing stops the stage before any scoring, and leaves the outputs as they were.
    before = (out / "metrics.json").read_bytes()
    tiny_raw["evaluate"]["real_sets"] = [*real_sets, {"name": "uhdm", "path": "real", "include": "uhdm_*"}]
    with pytest.raises(InputDataError, match=r"^evaluate.real_sets\[2\] \(uhdm\): no pair in .* matches include 'uhdm_\*'"):
        evaluate_flow(parse_params(tiny_raw), **paths, project_dir=tmp_path)
    assert (out / "metrics.json").read_bytes() == before

    # Without real sets the metrics keep their old shape and the real folder holds an empty index only.
    tiny_raw["evaluate"]["real_sets"] = []
    evaluate_flow(parse_params(tiny_raw), **paths, project_dir=tmp_path)
    assert "real" not in json.loads((out / "metrics.json").read_text())
    assert [p.name for p in (out / "real").iterdir()] == ["index.json"]  # no CSV; DVC sees a folder, not an empty one
    assert json.loads((out / "real" / "index.json").read_text()) == {}


def test_pipeline_summary_names_the_real_sets_means():
    from flows.full_pipeline import summary_markdown

    metrics = {"psnr": 22.0, "identity_psnr": 18.0, "ssim": 0.8, "mse": 0.01, "count": 3,
               "real": {"fhdmi": {}, "tip": {}}, "real_mean": {"psnr": 21.5, "tone_psnr": 25.25, "ssim": 0.7, "mse": 0.02}}
    text = summary_markdown({"seconds": 5, "stale_stages": [], "trained_on": "here", "metrics": metrics, "registration": None})
    assert "- real sets (fhdmi, tip): PSNR 21.50 dB, tone-aligned PSNR 25.25 dB, SSIM 0.700 (means over sets)" in text


def test_pipeline_summary_tells_a_registration_of_this_run_from_an_earlier_one():
    from flows.full_pipeline import summary_markdown

    record = {"model_name": "demoire", "version": "3", "promote": False, "reason": "does not beat v1"}
    run = {"seconds": 5, "stale_stages": [], "trained_on": "here", "metrics": None, "registration": record}
    assert "- `demoire` v3 not promoted: does not beat v1" in summary_markdown({**run, "registered": True})
    earlier = summary_markdown({**run, "registered": False})
    assert "- nothing registered (up to date); the last registration: `demoire` v3, not promoted" in earlier
    assert "does not beat" not in earlier
    # the stage ran, but found the same model and scores registered by an earlier run (another experiment)
    reused = {**record, "promote": True, "reason": "no champion yet", "gate_kind": "synthetic",
              "registered_earlier": {"run_id": "95e96dcb", "dvc_experiment": None}}
    text = summary_markdown({**run, "registration": reused, "registered": True})
    assert ("- `demoire` v3 was registered earlier (outside an experiment, run 95e96dcb) for the same model and "
            "scores: nothing was registered or moved now; then it was promoted to `champion` by the synthetic gate: "
            "no champion yet") in text
    assert "v3 promoted to" not in text


@pytest.mark.slow
def test_a_user_error_in_a_stage_is_one_line_without_a_prefect_traceback(tmp_path, tiny_raw, prefect_api):
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_raw))
    result = subprocess.run([sys.executable, "-m", "flows.preprocess", "--params", str(tmp_path / "params.yaml"),
                             "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "pairs.parquet"),
                             "--summary", str(tmp_path / "summary.json")], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "missing" in errors[0], output[-3000:]


@pytest.mark.slow
def test_a_missing_folder_stops_a_stage_in_one_line_before_any_flow_runs(tmp_path, tiny_raw, prefect_api):
    import yaml

    missing = tmp_path / "photos-not-here"
    raw = {**tiny_raw, "synthesize": {**tiny_raw.get("synthesize", {}), "sources": {"folders": [str(missing)]}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "flows.synthesize", "--params", str(tmp_path / "params.yaml"),
                             "--out", str(tmp_path / "synth"), "--report", str(tmp_path / "report")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    # what `demoire check-params` says, once; no flow run failed, no advice to declare a folder that is not there
    assert [line for line in output.splitlines() if "photos-not-here" in line] == [
        f"error: {tmp_path / 'params.yaml'}: synthesize.sources.folders[0] = '{missing}': no such folder ({missing})"]
    assert "Finished in state" not in output and not (tmp_path / "synth").exists()


def test_a_stage_in_an_experiments_copy_finds_folders_where_it_reads_them(tmp_path, monkeypatch):
    import flows._entry as entry
    from pipeline.config import parse_params
    from pipeline.errors import ParamsError

    project, copy = tmp_path / "project", tmp_path / "copy"  # `dvc exp run --temp`: the stage runs in a copy
    (project / "real").mkdir(parents=True)
    (copy / "tracked").mkdir(parents=True)  # only in the copy (the workspace moved on)
    (project / "untracked").mkdir()  # only in the project (not in git)
    monkeypatch.setattr(entry, "PROJECT_ROOT", project)
    monkeypatch.chdir(copy)
    params = entry.with_project_paths(parse_params({
        "synthesize": {"sources": {"folders": ["tracked", "untracked"]}},
        "evaluate": {"real_sets": [{"name": "r", "path": "real"}]}}))
    entry.check_stage_folders(params, Path("params.yaml"))  # each found where the stage reads it
    gone = params.model_copy(update={"evaluate": parse_params(
        {"evaluate": {"real_sets": [{"name": "r", "path": "elsewhere"}]}}).evaluate})
    with pytest.raises(ParamsError, match=r"evaluate.real_sets\[0\].path = 'elsewhere': no such folder"):
        entry.check_stage_folders(gone, Path("params.yaml"))


def test_the_adhoc_synthesis_flow_replaces_only_its_own_sets_and_only_when_asked(tmp_path, prefect_api):
    from flows.synthesize import synthesize_set_flow
    from pipeline.errors import InputDataError

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.txt").write_text("precious")
    (tmp_path / "README.md").write_text("a file")
    tiny = {"n_pairs": 2, "size": 48, "workers": 1}
    with pytest.raises(InputDataError, match=rf"^{victim} holds more than a synthetic set \(important.txt\); "
                                             r"parameter overwrite=true replaces only folders synthesize-set or "):
        synthesize_set_flow(out=str(victim), overwrite=True, **tiny)
    with pytest.raises(InputDataError, match=r"^parameter out .*README.md is a file, not a folder; name a folder$"):
        synthesize_set_flow(out=str(tmp_path / "README.md"), overwrite=True, **tiny)
    assert (victim / "important.txt").read_text() == "precious" and (tmp_path / "README.md").read_text() == "a file"

    out = tmp_path / "adhoc"
    assert synthesize_set_flow(out=str(out), **tiny)["pairs"] == 2
    with pytest.raises(InputDataError, match=rf"^{out} exists; choose another parameter out or pass parameter "
                                             r"overwrite=true$"):
        synthesize_set_flow(out=str(out), seed=1, **tiny)
    first = (out / "moire" / "000000.png").read_bytes()
    assert synthesize_set_flow(out=str(out), seed=1, overwrite=True, **tiny)["pairs"] == 2
    assert (out / "moire" / "000000.png").read_bytes() != first


def test_the_server_check_passes_a_prefect_api_and_names_what_is_wrong_otherwise(prefect_api):
    from flows.server_check import problem_with
    from tests.conftest import _free_port

    assert problem_with(prefect_api) is None
    root = prefect_api.removesuffix("/api")
    assert problem_with(root) == (f"{root} answers, but not as a Prefect API: PREFECT_API_URL ends in /api, "
                                  "e.g. http://127.0.0.1:4200/api (make server)")
    nobody = f"http://127.0.0.1:{_free_port()}/api"
    assert problem_with(nobody).startswith(f"no Prefect server answers at {nobody} (")
    assert problem_with("") == "set PREFECT_API_URL, e.g. http://127.0.0.1:4200/api (make server)"


def test_a_worker_for_a_mistyped_pool_is_refused_naming_the_pools_and_creates_none(prefect_api):
    from prefect import get_client

    from flows.server_check import pool_problem

    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        if "cpu" not in {pool.name for pool in client.read_work_pools()}:
            client.create_work_pool(WorkPoolCreate(name="cpu", type="process"))
    assert pool_problem(prefect_api, "cpu") is None
    result = subprocess.run([sys.executable, "-m", "flows.server_check", "--pool", "gpus"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    # the pools there (other tests of this session may add theirs), then what to do
    listed = re.fullmatch(rf"error: no work pool 'gpus' on {re.escape(prefect_api)} \(pools there: (.*)\); "
                          r"`make deploy` creates cpu and gpu: start the worker with POOL=cpu or POOL=gpu\n",
                          result.stderr)
    assert listed and "cpu" in listed[1].split(", "), result.stderr
    with get_client(sync_client=True) as client:
        assert "gpus" not in {pool.name for pool in client.read_work_pools()}


def test_a_missing_gpu_pool_means_training_here_not_a_failed_pipeline(prefect_api):
    from flows.full_pipeline import worker_online_task

    assert worker_online_task.fn("no-such-pool") is False


def test_uncommitted_train_code_is_listed_and_a_checkout_without_git_is_one_line(tmp_path, monkeypatch):
    from flows.full_pipeline import checkout_commit, uncommitted_train_code
    from pipeline.errors import DemoireError

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "train.py").write_text("# train\n")
    (tmp_path / "presets").mkdir()
    (tmp_path / ".gitignore").write_text("/data\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  train:\n    cmd: x\n"
                                       "    deps: [flows/train.py, presets, data/train]\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "train" / "model.pt").write_text("weights")  # a DVC output: ignored by git
    assert uncommitted_train_code() == []
    (tmp_path / "flows" / "train.py").write_text("# edited\n")
    (tmp_path / "presets" / "mine.yaml").write_text("base: default\n")
    assert uncommitted_train_code() == ["flows/train.py", "presets/mine.yaml"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert checkout_commit() == commit.strip()

    # an image that copied the project without .git: one line saying what it lacks, not git's traceback
    shutil.rmtree(tmp_path / ".git")
    for step in (checkout_commit, uncommitted_train_code):
        with pytest.raises(DemoireError, match=r"is not a git checkout with git installed: .* needs its \.git folder"):
            step()


def test_a_task_retries_a_hiccup_but_not_a_user_error(prefect_api):
    from prefect import flow, task

    from flows.run_logs import unless_user_error
    from pipeline.errors import InputDataError, ServiceUnavailableError

    calls = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=unless_user_error)
    def step(error: type[Exception]) -> None:
        calls.append(error.__name__)
        raise error("no")

    @flow
    def run(error: type[Exception]) -> None:
        step(error)

    for error in (InputDataError, ConnectionError, ServiceUnavailableError):
        with pytest.raises(error):
            run(error)
    assert calls == ["InputDataError"] + ["ConnectionError"] * 3 + ["ServiceUnavailableError"] * 3
