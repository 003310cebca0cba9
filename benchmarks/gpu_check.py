"""The GPU check (issue 14): every GPU figure of the project in one run, into one JSON file.

Run it through benchmarks/gpu_check.sh (or `make gpu-check`), whose header lists the options. It uses
the standard library alone, so it can run before anything is installed: it prepares an interpreter
(see `prepare_python`), then runs each step as a subprocess with its own timeout inside one overall
budget, records every step (figures, pass/fail, the error's last lines) and keeps going after a
failure. The JSON is rewritten after every step, so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
TORCH_INDEX = "https://download.pytorch.org/whl/cu128"
# Not needed by any step (the MLflow registry), and heavy to install on a bare machine.
NOT_NEEDED = {"mlflow"}
# Goals of issue 14 for one H100/H200: (step, figure, "min" or "max", target).
GOALS = {"bench_synth": ("pairs_per_s", "min", 2000.0), "bench_train": ("images_per_s", "min", 1500.0),
         "bench_infer_tiled": ("ms_per_frame", "max", 40.0)}
# The on-the-fly training leaves this much of the budget to its own start-up, the 4K predict and a margin.
TRAINING_RESERVE_S = 150.0


def last_json(stdout: str) -> dict:
    """The JSON object a command printed last (on one line, or as the whole output)."""
    try:
        return json.loads(stdout)
    except ValueError:
        return json.loads(stdout.strip().splitlines()[-1])


@dataclass
class Step:
    """One measurement: commands run in order (the last one prints the figures), then parsed."""

    name: str
    commands: list[list[str]]
    timeout: float
    parse: Callable[[str], dict] = last_json
    skip_reason: str | None = None


def log(message: str) -> None:
    """Progress on stderr, one line per event, so the JSON on disk stays the only output."""
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_report(report: dict, path: Path) -> None:
    """Write the report atomically (temp file, then rename): the project's rule for outputs, done with
    the standard library because pipeline.io may not be importable yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)


def tail(text: str, lines: int = 15) -> str:
    """The last lines of a log, where the error usually is."""
    return "\n".join(text.strip().splitlines()[-lines:])


def run(command: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command from the tree's root, capturing its output; TimeoutExpired when it runs too long.

    The command gets a process group of its own, which a timeout or a SIGTERM to the check stops whole:
    subprocess.run would kill the direct child only, leaving e.g. torchrun's workers running on the GPU.
    """
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as process:
        RUNNING.add(process)
        try:
            stdout, stderr = process.communicate(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired as exc:
            stop_group(process)
            stdout, stderr = process.communicate()
            raise subprocess.TimeoutExpired(command, exc.timeout, stdout, stderr) from None
        finally:
            RUNNING.discard(process)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


RUNNING: set[subprocess.Popen] = set()  # the step's process running now, whose group a SIGTERM stops


def stop_group(process: subprocess.Popen) -> None:
    """SIGKILL a command's whole process group (it is already gone: nothing to do)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_on_sigterm(signum: int, frame) -> None:
    """SIGTERM: stop the running step's group, then end the check as interrupted (main writes the report)."""
    for process in list(RUNNING):
        stop_group(process)
    raise Interrupted(f"stopped by signal {signum}")


class Interrupted(Exception):
    """The check was told to stop (SIGTERM)."""


# ---- preparing an interpreter ----------------------------------------------------------------------

def check_requirements() -> list[str]:
    """What the steps import: the project's dependencies (pyproject.toml) but torch and NOT_NEEDED, and pytest."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [requirement for requirement in dependencies
            if requirement_name(requirement) not in NOT_NEEDED | {"torch"}] + ["pytest"]


def torch_probe(python: str) -> dict | None:
    """torch's version and whether it sees CUDA under `python`; None when torch does not import."""
    code = "import json, torch; print(json.dumps({'torch': torch.__version__, 'cuda': torch.cuda.is_available()}))"
    try:
        result = run([python, "-c", code], 120)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else None


def pip_source(wheelhouse: str | None) -> list[str]:
    """Where pip looks: only the wheelhouse when one is given (offline), else the configured index."""
    return ["--no-index", "--find-links", wheelhouse] if wheelhouse else []


def pip(python: str, arguments: list[str], timeout: float) -> None:
    """`python -m pip ARGUMENTS`; a failure raises with pip's last lines."""
    # Few retries: offline without a wheelhouse, pip's default retries would spend minutes of the budget.
    result = run([python, "-m", "pip", "--disable-pip-version-check", "--retries", "1", "--timeout", "20", *arguments],
                 timeout)
    if result.returncode != 0:
        raise RuntimeError(f"pip {' '.join(arguments[:1])} failed:\n{tail(result.stderr or result.stdout)}")


def requirement_name(requirement: str) -> str:
    """'pydantic>=2.7,<3' → 'pydantic'."""
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def installed_versions(python: str, names: list[str]) -> dict[str, str | None]:
    """The version of each distribution `python` has, None where it has none."""
    code = ("import json, sys\nfrom importlib import metadata\nfound = {}\nfor name in sys.argv[1:]:\n"
            "    try:\n        found[name] = metadata.version(name)\n"
            "    except metadata.PackageNotFoundError:\n        found[name] = None\nprint(json.dumps(found))")
    return json.loads(run([python, "-c", code, *names], 120).stdout)


def install_missing_beside(python: str, site: Path, wheelhouse: str | None, timeout: float) -> tuple[dict, list[str]]:
    """Install what `python` lacks into `site` (put first on PYTHONPATH), leaving its own packages alone.

    A distribution it has is kept whatever its version (the machine's build is what is measured;
    the report lists the versions). pip resolves the absent ones against what it has (a dry run),
    so only missing distributions are fetched, and those go in without their dependencies: a
    second numpy or torch beside the machine's own would break its CUDA build.
    """
    requirements = check_requirements()
    versions = installed_versions(python, [requirement_name(requirement) for requirement in requirements])
    kept = {name: version for name, version in versions.items() if version}
    absent = [requirement for requirement in requirements if requirement_name(requirement) not in kept]
    if not absent:
        return kept, []
    report = site.parent / "pip-report.json"
    pip(python, ["install", "--dry-run", "--quiet", "--report", str(report), *pip_source(wheelhouse), *absent], timeout)
    missing = [f"{item['metadata']['name']}=={item['metadata']['version']}"
               for item in json.loads(report.read_text()).get("install", [])]
    pip(python, ["install", "--quiet", "--no-deps", "--target", str(site), *pip_source(wheelhouse), *missing], timeout)
    return kept, missing


def install_venv(base: str, venv: Path, torch_index: str, wheelhouse: str | None, timeout: float) -> str:
    """A fresh venv with the CUDA torch build and the steps' requirements (constraints.txt on Python 3.11)."""
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, timeout=timeout)
    python = str(venv / "bin" / "python")
    pins = (ROOT / "constraints.txt").read_text()
    torch_version = re.search(r"^torch==([\w.]+)", pins, re.MULTILINE).group(1)
    torch_from = pip_source(wheelhouse) or ["--index-url", torch_index]
    pip(python, ["install", "--quiet", f"torch=={torch_version}", *torch_from], timeout)
    constraints = ["-c", str(ROOT / "constraints.txt")] if sys.version_info[:2] == (3, 11) else []
    pip(python, ["install", "--quiet", *constraints, *pip_source(wheelhouse), *check_requirements()], timeout)
    return python


def prepare_python(args: argparse.Namespace, work: Path, deadline: float) -> tuple[str, dict, dict]:
    """(interpreter, extra environment, setup record), in the first way that applies:

    - given: `--python` as it is, nothing installed;
    - reuse: this interpreter's torch already sees CUDA (or --device cpu): missing packages only,
      into WORK/site (from the wheelhouse when one is given);
    - install: a venv in WORK/venv with torch from the CUDA index (or the wheelhouse), then the rest.
    """
    started = time.monotonic()
    record: dict = {"python": args.python or sys.executable}
    env: dict = {}
    if args.python:
        if not shutil.which(args.python):  # found now, not as ten failed steps
            raise RuntimeError(f"--python {args.python}: no such interpreter (from {Path.cwd()})")
        record["mode"] = "given"
    else:
        probe = torch_probe(sys.executable)
        record["found_torch"] = probe
        if probe and (probe["cuda"] or args.device == "cpu"):
            record["mode"] = "reuse"
            site = work / "site"
            record["kept"], record["installed"] = install_missing_beside(sys.executable, site, args.wheelhouse,
                                                                        deadline - time.monotonic())
            env["PYTHONPATH"] = str(site)
        else:
            record["mode"] = "install"
            record["python"] = install_venv(sys.executable, work / "venv", args.torch_index, args.wheelhouse,
                                            deadline - time.monotonic())
    record["seconds"] = time.monotonic() - started
    return record["python"], env, record


# ---- the steps ---------------------------------------------------------------------------------------

ENVIRONMENT_PROBE = """
import json, os, platform, torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    info.update(device_name=props.name, capability=f"{props.major}.{props.minor}", gpu_count=torch.cuda.device_count(),
                memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count,
                cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported())
    try:
        version = torch.cuda.nccl.version()
        info["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    except (AttributeError, RuntimeError) as exc:
        info["nccl"] = f"unavailable: {exc}"
else:
    info["device_name"] = platform.processor() or platform.machine()
print(json.dumps(info))
"""

# A frame with moiré-free structure (gradients and text-like bars), so the PNG stays small and fast to decode.
FRAME_WRITER = """
import sys
import numpy as np
from PIL import Image
width, height = int(sys.argv[1]), int(sys.argv[2])
y, x = np.mgrid[0:height, 0:width]
frame = np.stack([x * 255 // width, y * 255 // height, ((x // 24 + y // 12) % 2) * 200], axis=-1).astype(np.uint8)
Image.fromarray(frame).save(sys.argv[3])
"""

# The default architecture with seeded, untrained weights: speed does not depend on what it learnt.
DEFAULT_MODEL_WRITER = """
import sys
from pipeline.config import TrainParams
from pipeline.models import build_model, model_spec, save_model
sizes = [int(value) for value in sys.argv[2:]] or [None, None]
spec = model_spec(TrainParams().model, *sizes)
save_model(build_model(spec, seed=0), spec, sys.argv[1])
"""

# One DDP process per GPU (NCCL) or one on the CPU (gloo): an all-reduce and a DDP training step.
DDP_PROBE = """
import json, os, time, torch, torch.distributed as dist
from pipeline.config import TrainParams
from pipeline.models import ModelSpec, build_model
from pipeline.training.distributed import World, world_from_env
from pipeline.training.loop import wrap_for_training
cuda = torch.cuda.is_available() and os.environ["GPU_CHECK_DEVICE"] == "cuda"
device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
if cuda:
    torch.cuda.set_device(device)
dist.init_process_group("nccl" if cuda else "gloo")  # also for one process, where process_group would not
world = world_from_env()
total = torch.ones(1, device=device)
dist.all_reduce(total)
model = build_model(ModelSpec("unet", 8, 2), seed=0).to(device)
# DDP itself, even in a world of one (wrap_for_training adds it only from two processes on).
net = torch.nn.parallel.DistributedDataParallel(wrap_for_training(model, TrainParams(), World(), device),
                                                device_ids=[device.index] if cuda else None)
start = time.perf_counter()
net(torch.rand(2, 3, 64, 64, device=device))[0].mean().backward()
if world.is_main:
    print(json.dumps({"backend": dist.get_backend(), "world_size": world.size, "all_reduce_sum": float(total),
                      "ddp_step_s": time.perf_counter() - start}))
dist.destroy_process_group()
"""


def junit_counts(path: Path) -> dict:
    """Passed, failed, errors and skipped from pytest's JUnit XML."""
    suite = ElementTree.parse(path).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def gpu_test_files() -> list[str]:
    """Test files that hold `gpu`-marked tests (collecting only these keeps other suites' imports out)."""
    return sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tests").rglob("test_*.py")
                  if "mark.gpu" in path.read_text())


def build_steps(python: str, device: str, tiny: bool, work: Path, train_seconds: float,
                trained_model: Path) -> list[Step]:
    """Every step, at full size or (tiny) at sizes a 2-core CPU runs in seconds; the on-the-fly training saves
    its model to `trained_model`."""
    cli = [python, "-m", "pipeline.cli"]
    model_size = ["--channels", "8", "--depth", "2"] if tiny else []
    junit = work / "gpu_tests.xml"
    frame_size = ("96", "64") if tiny else ("3840", "2160")
    frame, default_model, restored = work / "frame.png", work / "default_model", work / "restored"
    return [
        Step("environment", [[python, "-c", ENVIRONMENT_PROBE]], 120),
        Step("gpu_tests", [[python, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", f"--junitxml={junit}",
                            *gpu_test_files()]], 240, parse=lambda _: junit_counts(junit)),
        Step("bench_synth", [[*cli, "bench", "synth", "--device", device, "--batched", "--json",
                              *(["--size", "64", "--batch", "2", "--repeats", "2"] if tiny else
                                ["--size", "512", "--batch", "64", "--repeats", "5"])]], 150),
        # The same with a bank of moiré layers (synthesize.moire_layer_bank): 2× on one CPU core; unmeasured on CUDA.
        Step("bench_synth_bank", [[*cli, "bench", "synth", "--device", device, "--batched", "--json",
                                   *(["--size", "64", "--batch", "2", "--repeats", "2", "--layer-bank", "2"] if tiny else
                                     ["--size", "512", "--batch", "64", "--repeats", "5", "--layer-bank", "32"])]], 150),
        Step("bench_train", [[*cli, "bench", "train", "--model", "mscale", "--device", device, "--json", *model_size,
                              *(["--size", "32", "--batch", "2", "--steps", "1", "--repeats", "2"] if tiny else
                                ["--size", "256", "--steps", "5", "--repeats", "3"])]], 150),
        Step("bench_infer_tiled", [[*cli, "bench", "infer", "--device", device, "--json", *model_size,
                                    *(["--size", "96x64", "--tile", "32", "--overlap", "8", "--repeats", "2"] if tiny
                                      else ["--size", "3840x2160", "--repeats", "5"])]], 150),
        Step("bench_infer_whole", [[*cli, "bench", "infer", "--device", device, "--json", "--tile", "0", *model_size,
                                    *(["--size", "96x64", "--repeats", "2"] if tiny else
                                      ["--size", "3840x2160", "--repeats", "5"])]], 150),
        Step("ddp", [[python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "gpu" if device == "cuda" else "1",
                      "--no-python", python, "-c", DDP_PROBE]], 150),
        Step("train_on_the_fly", [[*cli, "bench", "fly", "--profile", "gpu", "--device", device, "--json",
                                   "--seconds", f"{train_seconds:.0f}", "--save", str(trained_model),
                                   *(["--patch", "32", "--batch", "2", "--no-compile", *model_size] if tiny else [])]],
             train_seconds + 180),
        Step("predict_4k", [[python, "-c", FRAME_WRITER, *frame_size, str(frame)],
                            [python, "-c", DEFAULT_MODEL_WRITER, str(default_model), *(["8", "2"] if tiny else [])],
                            # --max-side 0: the whole 4K frame through the model, as issue 14's 40-ms goal means;
                            # --falloff 0: that goal is the model's, not the CPU-side falloff step's (0.4 s at 4K)
                            [*cli, "predict", str(frame), "-o", str(restored), "--model", str(default_model),
                             "--device", device, "--overwrite", "--max-side", "0", "--falloff", "0", "--json"]], 180),
        Step("bench_train_compiled", [[*cli, "bench", "train", "--model", "mscale", "--device", device, "--json",
                                       "--compile", "--size", "256", "--steps", "5", "--repeats", "3"]], 240,
             skip_reason=("torch.compile is rehearsed on CUDA only: on the CPU inductor takes minutes and fails "
                          "for mscale (InductorError)") if tiny else None),
    ]


def goal_of(name: str, figures: dict, device: str, tiny: bool) -> dict | None:
    """Whether a step met its issue-14 goal; None for steps without one, or off a GPU or at tiny sizes."""
    if name not in GOALS or device != "cuda" or tiny:
        return None
    figure, sense, target = GOALS[name]
    value = figures.get(figure)
    met = value is not None and (value >= target if sense == "min" else value <= target)
    return {"figure": figure, "target": target, "sense": sense, "value": value, "met": met}


def shown(command: list[str]) -> str:
    """A command as the report shows it: inline scripts (python -c) named, not written out."""
    return " ".join("<script>" if "\n" in argument else argument for argument in command)


def run_step(step: Step, env: dict, deadline: float) -> dict:
    """Run one step within its timeout and what is left of the budget; never raises."""
    started = time.monotonic()
    record: dict = {"status": "passed", "commands": [shown(command) for command in step.commands]}
    result = None
    if step.skip_reason:
        return {**record, "status": "skipped", "reason": step.skip_reason, "seconds": 0.0}
    if deadline - started < 10:
        return {**record, "status": "skipped", "reason": "the overall budget is spent", "seconds": 0.0}
    try:
        for command in step.commands:
            result = run(command, min(step.timeout - (time.monotonic() - started), deadline - time.monotonic()), env)
            if result.returncode != 0:
                record.update(status="failed", returncode=result.returncode, error=tail(result.stderr + result.stdout))
                break
        if record["status"] == "passed":
            record["figures"] = step.parse(result.stdout)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        record.update(status="timeout", error=f"stopped after {exc.timeout:.0f} s\n{tail(stderr)}")
    except (ValueError, KeyError, IndexError, OSError, ElementTree.ParseError) as exc:  # figures missing or malformed
        record.update(status="failed", error=f"could not read the figures: {exc!r}\n{tail(result.stdout if result else '')}")
    record["seconds"] = time.monotonic() - started
    return record


def fit_training(step: Step, wanted: float, deadline: float) -> None:
    """Shorten the on-the-fly training to what the budget has left, so the steps after it still run."""
    seconds = float(round(max(5.0, min(wanted, deadline - time.monotonic() - TRAINING_RESERVE_S))))
    command = step.commands[0]
    command[command.index("--seconds") + 1] = f"{seconds:.0f}"
    step.timeout = seconds + 180


def trained_model_dir(out: Path) -> Path:
    """Where the on-the-fly training's model goes: beside the report, so it comes back with it (a previous one removed)."""
    path = out.resolve().with_name(out.stem + "-model")
    if path.is_dir() and (path / "model.json").is_file():
        shutil.rmtree(path)
    return path


def fresh_work_dir(path: Path) -> Path:
    """An empty work folder: a previous check's is cleared, any other non-empty folder refused."""
    marker = path / ".gpu-check-work"
    if path.exists() and any(path.iterdir()):
        if not marker.exists():
            raise SystemExit(f"error: --work {path} is a non-empty folder the check did not make; name another")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return path


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options gpu_check.sh documents."""
    parser = argparse.ArgumentParser(description="GPU check (issue 14): all GPU figures in one JSON file")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU rehearsal)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "gpu_check.json")
    parser.add_argument("--python", help="an interpreter that has everything; nothing is installed")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "demoire-gpu-check")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole check, setup included")
    parser.add_argument("--train-seconds", type=float, default=None, help="on-the-fly training [120; tiny 8]")
    parser.add_argument("--wheelhouse", default=os.environ.get("WHEELHOUSE"), help="install offline from these wheels")
    parser.add_argument("--torch-index", default=os.environ.get("TORCH_INDEX", TORCH_INDEX))
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Prepare, run every step, write the JSON after each; exit 0 when every step that ran passed."""
    args = parse_args(argv)
    start = time.monotonic()
    deadline = start + args.budget
    work = fresh_work_dir(args.work.resolve())
    report: dict = {"check": "demoire GPU check (issue 14)", "started": datetime.datetime.now(datetime.UTC).isoformat(),
                    "device": args.device, "tiny": args.tiny, "budget_s": args.budget, "steps": {}}
    log(f"setting up ({'given interpreter' if args.python else 'probing ' + sys.executable})")
    try:
        python, extra_env, report["setup"] = prepare_python(args, work, deadline)
        report["setup"]["status"] = "passed"
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:  # ValueError: a probe printed no JSON
        report["setup"] = {"status": "failed", "error": str(exc), "seconds": time.monotonic() - start}
        report.update(passed=False, total_seconds=time.monotonic() - start)
        write_report(report, args.out)
        log(f"setup failed; report in {args.out}")
        return 1
    env = {**os.environ, **extra_env, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", "GPU_CHECK_DEVICE": args.device,
           "PYTHONPATH": os.pathsep.join(filter(None, [extra_env.get("PYTHONPATH"), str(ROOT)]))}
    train_seconds = args.train_seconds if args.train_seconds is not None else (8.0 if args.tiny else 120.0)
    trained_model = trained_model_dir(args.out)
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        run_steps(args, python, env, work, train_seconds, trained_model, deadline, start, report)
    except Interrupted as exc:
        report.update(passed=False, interrupted=str(exc), total_seconds=time.monotonic() - start)
        write_report(report, args.out)
        log(f"{exc}; report in {args.out}")
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)
    statuses = [record["status"] for record in report["steps"].values()]
    report["passed"] = all(status in ("passed", "skipped") for status in statuses)
    report["goals_met"] = {name: record["goal"]["met"] for name, record in report["steps"].items() if "goal" in record}
    report["total_seconds"] = time.monotonic() - start
    write_report(report, args.out)
    log(f"done in {report['total_seconds']:.0f} s: {statuses.count('passed')} passed, {statuses.count('failed')} failed, "
        f"{statuses.count('timeout')} timed out, {statuses.count('skipped')} skipped; report in {args.out}")
    return 0 if report["passed"] else 1


def run_steps(args: argparse.Namespace, python: str, env: dict, work: Path, train_seconds: float, trained_model: Path,
              deadline: float, start: float, report: dict) -> None:
    """Every step in turn, the report written after each."""
    for step in build_steps(python, args.device, args.tiny, work, train_seconds, trained_model):
        if step.name == "train_on_the_fly":
            fit_training(step, train_seconds, deadline)
        log(f"{step.name} …")
        record = run_step(step, env, deadline)
        if step.name == "environment" and args.device == "cuda" and not record.get("figures", {}).get("cuda_available", True):
            record.update(status="failed", error="torch sees no CUDA device")
        if record.get("figures") is not None:
            goal = goal_of(step.name, record["figures"], args.device, args.tiny)
            if goal is not None:
                record["goal"] = goal
        if step.name == "train_on_the_fly" and (trained_model / "model.json").is_file():
            # scored on real photos where they are (not on the GPU machine): `demoire evaluate --model` this folder
            record["trained_model"] = str(trained_model)
        report["steps"][step.name] = record
        if step.name == "environment" and "figures" in record:
            report["machine"] = record["figures"]
        report["total_seconds"] = time.monotonic() - start
        write_report(report, args.out)
        log(f"{step.name}: {record['status']} in {record['seconds']:.1f} s")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
