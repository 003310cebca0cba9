"""The GPU check (benchmarks/gpu_check.sh): its CPU rehearsal, its bookkeeping, and `bench fly` it relies on."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.models import load_model
from tests.conftest import load_script

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["environment", "gpu_tests", "bench_synth", "bench_synth_bank", "bench_train", "bench_infer_tiled", "bench_infer_whole", "ddp",
         "train_on_the_fly", "predict_4k", "bench_train_compiled"]
runner = CliRunner()


@pytest.fixture(scope="module")
def gpu_check():
    """benchmarks/gpu_check.py as a module (benchmarks/ is no package)."""
    return load_script("benchmarks/gpu_check.py")


def _tree_copy(target: Path) -> Path:
    """The working tree as git sees it (tracked and untracked-not-ignored files): no data/, no .venv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


@pytest.mark.slow
def test_cpu_rehearsal_runs_every_step_in_a_bare_copy_of_the_tree(tmp_path):
    tree = _tree_copy(tmp_path / "tree")
    assert not (tree / "data").exists() and not (tree / ".venv").exists()
    out = tmp_path / "report" / "gpu_check.json"
    # A generous budget: a loaded CI machine is slow, and the budget's own effect is tested below.
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--tiny", "--python", sys.executable,
                             "--out", str(out), "--work", str(tmp_path / "work"), "--budget", "1500"],
                            cwd=tree, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    steps = report["steps"]
    assert list(steps) == STEPS
    assert report["passed"] is True and report["setup"]["mode"] == "given" and report["device"] == "cpu"
    assert report["machine"]["torch"] and report["machine"]["cuda_available"] is False
    assert 0 < report["total_seconds"] <= report["budget_s"]
    for name in STEPS[:-1]:
        assert steps[name]["status"] == "passed", (name, steps[name].get("error"))
        assert steps[name]["seconds"] > 0
    figures = {name: steps[name]["figures"] for name in STEPS[:-1]}
    tests = figures["gpu_tests"]
    assert tests["tests"] >= 2 and tests["skipped"] == tests["tests"] and tests["failures"] == tests["errors"] == 0
    assert figures["bench_synth"]["pairs_per_s"] > 0 and figures["bench_synth"]["batch"] == 2
    assert figures["bench_synth_bank"]["pairs_per_s"] > 0 and figures["bench_synth_bank"]["layer_bank"] == 2
    assert figures["bench_train"]["images_per_s"] > 0 and figures["bench_train"]["model"] == "mscale"
    assert figures["bench_infer_tiled"]["tiles"] > 1 and figures["bench_infer_tiled"]["ms_per_frame"] > 0
    assert figures["bench_infer_whole"]["tiles"] == 1 and figures["bench_infer_whole"]["ms_per_frame"] > 0
    assert figures["ddp"] == {**figures["ddp"], "backend": "gloo", "world_size": 1, "all_reduce_sum": 1.0}
    assert figures["train_on_the_fly"]["profile"] == "gpu" and figures["train_on_the_fly"]["steps"] >= 1
    # its model comes back beside the report (the device's $OUT), to be scored on real photos where they are
    trained = Path(steps["train_on_the_fly"]["trained_model"])
    assert trained == out.parent / "gpu_check-model"
    assert load_model(trained)[1].name == "mscale"
    (restored,) = figures["predict_4k"]["restored"]
    assert (restored["width"], restored["height"]) == (96, 64) and Path(restored["output"]).is_file()
    assert steps["bench_train_compiled"]["status"] == "skipped" and "CUDA only" in steps["bench_train_compiled"]["reason"]
    assert "goal" not in steps["bench_synth"] and report["goals_met"] == {}  # goals are judged on CUDA at full size
    assert not (tree / "data").exists() and not (tree / ".pytest_cache").exists()


def test_a_failed_or_timed_out_step_is_recorded_and_the_next_one_still_runs(gpu_check, tmp_path, monkeypatch):
    python = sys.executable
    steps = [
        gpu_check.Step("broken", [[python, "-c", "import sys; print('bad input', file=sys.stderr); sys.exit(3)"]], 30),
        gpu_check.Step("slow", [[python, "-c", "import time; time.sleep(30)"]], 2),
        gpu_check.Step("not_here", [[python, "-c", "print('{}')"]], 30, skip_reason="CUDA only"),
        gpu_check.Step("fine", [[python, "-c", "print('noise'); print('{\"pairs_per_s\": 2500.0}')"]], 30),
    ]
    monkeypatch.setattr(gpu_check, "build_steps", lambda *args: steps)
    monkeypatch.setitem(gpu_check.GOALS, "fine", ("pairs_per_s", "min", 2000.0))
    out = tmp_path / "gpu_check.json"
    code = gpu_check.main(["--python", python, "--out", str(out), "--work", str(tmp_path / "work")])
    report = json.loads(out.read_text())
    assert code == 1 and report["passed"] is False
    broken, slow, not_here, fine = (report["steps"][name] for name in ("broken", "slow", "not_here", "fine"))
    assert broken["status"] == "failed" and broken["returncode"] == 3 and "bad input" in broken["error"]
    assert slow["status"] == "timeout" and "stopped after 2 s" in slow["error"]
    assert not_here["status"] == "skipped" and not_here["reason"] == "CUDA only"
    assert fine["status"] == "passed" and fine["figures"] == {"pairs_per_s": 2500.0}
    assert fine["goal"]["met"] is True and report["goals_met"] == {"fine": True}
    assert not list(tmp_path.glob(".gpu_check.json.*"))  # written through a temp file, renamed


def test_the_work_folder_is_cleared_only_when_an_earlier_check_made_it(gpu_check, tmp_path):
    (tmp_path / "mine" / "old.txt").parent.mkdir()
    (tmp_path / "mine" / "old.txt").write_text("keep")
    with pytest.raises(SystemExit, match="did not make"):
        gpu_check.fresh_work_dir(tmp_path / "mine")
    assert (tmp_path / "mine" / "old.txt").read_text() == "keep"
    work = gpu_check.fresh_work_dir(tmp_path / "work")
    (work / "frame.png").write_bytes(b"old")
    assert list(gpu_check.fresh_work_dir(work).iterdir()) == [work / ".gpu-check-work"]


def test_goals_are_judged_only_on_cuda_at_full_size(gpu_check):
    assert gpu_check.goal_of("bench_infer_tiled", {"ms_per_frame": 52.0}, "cuda", False)["met"] is False
    assert gpu_check.goal_of("bench_infer_tiled", {"ms_per_frame": 31.0}, "cuda", False)["met"] is True
    assert gpu_check.goal_of("bench_train", {"images_per_s": 1400.0}, "cuda", False)["met"] is False
    assert gpu_check.goal_of("bench_train", {"images_per_s": 1400.0}, "cuda", True) is None
    assert gpu_check.goal_of("bench_synth", {"pairs_per_s": 3.0}, "cpu", False) is None


def test_training_is_shortened_to_leave_the_later_steps_their_share_of_the_budget(gpu_check, tmp_path):
    import time

    def fly_step():
        (step,) = [s for s in gpu_check.build_steps("python", "cuda", False, tmp_path, 120.0,
                                                          tmp_path / "model") if s.name == "train_on_the_fly"]
        return step

    roomy, tight = fly_step(), fly_step()
    gpu_check.fit_training(roomy, 120.0, time.monotonic() + 400)
    gpu_check.fit_training(tight, 120.0, time.monotonic() + gpu_check.TRAINING_RESERVE_S + 60)
    seconds = [float(step.commands[0][step.commands[0].index("--seconds") + 1]) for step in (roomy, tight)]
    assert seconds[0] == 120.0 and 55.0 <= seconds[1] <= 60.0 and tight.timeout == seconds[1] + 180


def test_the_check_installs_what_its_steps_import_but_not_torch_or_the_registry(gpu_check):
    names = [requirement.split(">")[0].split("=")[0] for requirement in gpu_check.check_requirements()]
    assert {"pydantic", "albumentations", "torchmetrics", "pytest"} <= set(names)
    assert "torch" not in names and "mlflow" not in names


def test_bench_fly_trains_on_pairs_rendered_on_the_fly_and_saves_a_model(tmp_path):
    from pipeline.models import load_model

    result = runner.invoke(app, ["bench", "fly", "--device", "cpu", "--seconds", "0", "--patch", "32", "--batch", "2",
                                 "--channels", "8", "--depth", "2", "--save", str(tmp_path / "m"), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["steps"] == 1 and figures["images"] == 2 and figures["images_per_s"] is None  # only the first step
    # the gpu profile compiles, but not on the CPU unless --compile says so (Inductor failed there)
    assert (figures["profile"], figures["model"], figures["patch_size"], figures["compile"]) == ("gpu", "mscale", 32, False)
    assert figures["ema"] is True and figures["loss_first"] == figures["loss_last"] > 0
    model, spec = load_model(tmp_path / "m")
    assert (spec.name, spec.channels, spec.depth) == ("mscale", 8, 2)
    # a second run into the same folder is refused before it trains, not after: the model there is kept
    before = (tmp_path / "m" / "model.pt").read_bytes()
    again = runner.invoke(app, ["bench", "fly", "--device", "cpu", "--seconds", "0", "--patch", "32", "--batch", "2",
                                "--save", str(tmp_path / "m")])
    assert again.exit_code == 2 and again.output.strip() == (
        f"error: --save {tmp_path / 'm'} holds a model already; choose another folder or remove it")
    assert (tmp_path / "m" / "model.pt").read_bytes() == before
    # a save cut short between the weights and the spec (written last) is named as such
    (tmp_path / "m" / "model.json").unlink()
    cut = runner.invoke(app, ["bench", "fly", "--device", "cpu", "--seconds", "0", "--save", str(tmp_path / "m")])
    assert cut.exit_code == 2 and cut.output.strip() == (
        f"error: --save {tmp_path / 'm'} holds model.pt without model.json (a save cut short?); "
        f"remove {tmp_path / 'm' / 'model.pt'} or choose another folder")


def test_a_missing_interpreter_fails_the_setup_naming_it(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.json"
    code = gpu_check.main(["--python", str(tmp_path / "no-venv" / "python"), "--out", str(out),
                           "--work", str(tmp_path / "work")])
    report = json.loads(out.read_text())
    assert code == 1 and report["setup"]["status"] == "failed" and report["steps"] == {}
    assert report["setup"]["error"].startswith(f"--python {tmp_path / 'no-venv' / 'python'}: no such interpreter")


def test_bench_fly_rejects_an_unknown_profile_in_one_line():
    result = runner.invoke(app, ["bench", "fly", "--profile", "huge", "--device", "cpu", "--seconds", "0"])
    assert result.exit_code == 2
    assert "profile" in result.output and "huge" in result.output and "gpu" in result.output


def test_bench_fly_of_one_step_says_it_has_no_rate_rather_than_zero():
    result = runner.invoke(app, ["bench", "fly", "--profile", "quick", "--device", "cpu", "--seconds", "0",
                                 "--patch", "16", "--batch", "1", "--channels", "4", "--depth", "2"])
    assert result.exit_code == 0, result.output
    assert "1 steps in" in result.stdout and "no rate (one step only) after it" in result.stdout
    assert "images/s after it" not in result.stdout


def test_bench_synth_batched_runs_the_batched_simulator_on_the_cpu():
    result = runner.invoke(app, ["bench", "synth", "--device", "cpu", "--batched", "--size", "32", "--batch", "2",
                                 "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["pairs_per_s"] > 0 and (figures["device"], figures["batch"]) == ("cpu", 2)


def test_packages_the_interpreter_has_are_kept_and_only_absent_ones_are_looked_for(gpu_check):
    import pytest as installed_pytest

    found = gpu_check.installed_versions(sys.executable, ["pytest", "no-such-distribution-here"])
    assert found == {"pytest": installed_pytest.__version__, "no-such-distribution-here": None}
    assert gpu_check.requirement_name("albumentations>=2.0.8,<3") == "albumentations"


def test_a_failed_setup_still_writes_the_report_saying_why(gpu_check, tmp_path, monkeypatch):
    def offline(*args):
        raise RuntimeError("pip install failed:\nERROR: No matching distribution found for pydantic")

    monkeypatch.setattr(gpu_check, "prepare_python", offline)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out), "--work", str(tmp_path / "work")]) == 1
    report = json.loads(out.read_text())
    assert report["passed"] is False and report["steps"] == {}
    assert report["setup"]["status"] == "failed" and "pydantic" in report["setup"]["error"]


# a step that starts a grandchild (as torchrun starts its workers), writes its pid, and waits
SPAWNS = ("import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
          "open(sys.argv[1], 'w').write(str(child.pid)); time.sleep(60)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


@pytest.mark.parametrize("how", ["timeout", "sigterm"])
def test_a_stopped_step_takes_its_whole_process_group_with_it(gpu_check, tmp_path, monkeypatch, how):
    pid_file = tmp_path / "grandchild.pid"
    steps = [gpu_check.Step("spawns", [[sys.executable, "-c", SPAWNS, str(pid_file)]], 3 if how == "timeout" else 60)]
    monkeypatch.setattr(gpu_check, "build_steps", lambda *args: steps)
    if how == "sigterm":  # as `kill -TERM` on the check would, once the step's grandchild runs
        def terminate():
            while not pid_file.exists() or not pid_file.read_text():
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM)
        threading.Thread(target=terminate, daemon=True).start()
    out = tmp_path / "gpu_check.json"
    code = gpu_check.main(["--python", sys.executable, "--out", str(out), "--work", str(tmp_path / "work")])
    report = json.loads(out.read_text())
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)
    if how == "timeout":
        assert code == 1 and report["steps"]["spawns"]["status"] == "timeout"
    else:
        assert code == 143 and report["passed"] is False and report["interrupted"] == "stopped by signal 15"
    assert signal.getsignal(signal.SIGTERM) is not gpu_check.stop_on_sigterm  # the caller's handler is back
