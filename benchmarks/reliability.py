"""Reliability figures of issue 15: bad inputs handled, kill points recovered, concurrent registrations, serving.

    python benchmarks/reliability.py            # bad inputs + concurrency + kill points (pytest suites), ~5 min
    python benchmarks/reliability.py --serve    # also the bounded server: 20 mixed requests + 1 oversized, peak RSS
    python benchmarks/reliability.py --kill-all # also kill -9 at every point of pipeline/faults.py under dvc repro, ~15 min

Each figure comes from the fault-injection tests in tests/ (real CLI, real MLflow on SQLite, real processes
killed with SIGKILL); this script runs them and prints what they establish.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pytest_counts(*args: str) -> tuple[int, int, float]:
    """(passed, failed, seconds) of a pytest run over `args`; a run that errors (pytest missing, a collection
    error) counts as one failure, whatever its last line says."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT,
                            capture_output=True, text=True)
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    passed = int(tail.split(" passed")[0].split()[-1]) if " passed" in tail else 0
    failed = int(tail.split(" failed")[0].split()[-1]) if " failed" in tail else 0
    if result.returncode != 0 and not failed:
        failed = 1
    return passed, failed, time.perf_counter() - start


def serve_figures() -> dict:
    """20 concurrent requests of mixed sizes plus one oversized against python -m pipeline.serving; peak RSS."""
    import tempfile

    import httpx
    import numpy as np
    import psutil

    from tests.test_registry_transaction import WORKER

    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        subprocess.run([sys.executable, "-c", WORKER, tmp, "1", "22.0"], env=env, check=True, capture_output=True)
        port = 5000 + os.getpid() % 1000
        server = subprocess.Popen([sys.executable, "-m", "pipeline.serving", "-m", "models:/demoire@champion", "-p",
                                   str(port), "--max-body-mb", "16", "--timeout", "120"], cwd=tmp, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        peak, stop = [0], threading.Event()

        def watch():
            process = psutil.Process(server.pid)
            while not stop.wait(0.05):
                peak[0] = max(peak[0], process.memory_info().rss)

        threading.Thread(target=watch, daemon=True).start()
        rng = np.random.default_rng(0)
        sizes = [(32, 32), (64, 48), (128, 128), (256, 192), (600, 400)] * 4
        codes = {}

        def send(name, payload):
            try:
                codes[name] = httpx.post(f"{url}/invocations", content=payload, timeout=300,
                                         headers={"content-type": "application/json"}).status_code
            except httpx.HTTPError as exc:
                codes[name] = type(exc).__name__

        threads = [threading.Thread(target=send, args=(f"{i}:{h}x{w}", json.dumps(
            {"inputs": rng.integers(0, 256, (h, w, 3)).tolist()}))) for i, (h, w) in enumerate(sizes)]
        oversized = json.dumps({"inputs": np.ones((1500, 1500, 3), int).tolist()})  # ~20 MB of JSON
        threads.append(threading.Thread(target=send, args=("oversized 1500x1500", oversized)))
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
        healthy = httpx.get(f"{url}/ping", timeout=5).status_code == 200
        stop.set()
        server.terminate()
        exited = server.wait(timeout=30)
    return {"answered_200": sum(code == 200 for name, code in codes.items() if not name.startswith("oversized")),
            "requests": len(sizes), "oversized": codes["oversized 1500x1500"], "seconds": round(seconds, 1),
            "peak_rss_mb": round(peak[0] / 2**20), "healthy_after": healthy, "exit_code_after_sigterm": exited}


STAGE_OF = {"synthesize.shard_done": "synthesize", "before:synthesize": "synthesize", "after:synthesize": "synthesize",
            "before:pairs.parquet": "preprocess", "after:checkpoint.pt": "train", "before:model.pt": "train",
            "before:metrics.json": "evaluate"}


def kill_all_figures() -> dict:
    """In a fresh tiny project (tests/integration/project.py): after a first `dvc repro`, for every kill point a
    stage run is killed there with SIGKILL and the same command run again; then `dvc status` must be clean,
    every version decided once, no run RUNNING. Register kills follow a change of register.promotion_margin_db."""
    import tempfile

    import yaml

    from tests.integration.project import make_project, read_registry, run
    from tests.test_registry_transaction import registry_state
    from pipeline.faults import KILL_POINTS

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "project"
        repo.mkdir()
        env = make_project(repo, "")
        env.pop("PREFECT_API_URL")  # the stages share a temporary Prefect server of their own
        run(["dvc", "repro"], repo, env, timeout=3600)
        for attempt, point in enumerate(KILL_POINTS):
            stage = STAGE_OF.get(point, "register")
            command = ["dvc", "repro", "-f", "-s", stage]
            if stage == "train":  # one more epoch: a forced rerun would resume from the finished checkpoint and write none
                params = yaml.safe_load((repo / "params.yaml").read_text())
                params["train"]["epochs"] = int(params["train"]["epochs"]) + 1
                (repo / "params.yaml").write_text(yaml.safe_dump(params))
            if stage == "register":
                params = yaml.safe_load((repo / "params.yaml").read_text())
                params["register"]["promotion_margin_db"] = round(0.01 * (attempt + 1), 2)
                (repo / "params.yaml").write_text(yaml.safe_dump(params))
                command = ["dvc", "repro"]
            killed = subprocess.run(command, cwd=repo, env={**env, "DEMOIRE_KILL_AT": point}, capture_output=True,
                                    text=True, timeout=3600)
            rerun = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=3600)
            caught_up = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True, timeout=3600)
            status = subprocess.run(["dvc", "status"], cwd=repo, env=env, capture_output=True, text=True)
            registry = read_registry(repo, env)
            decided = all(tags.get("promotion") in ("promoted", "not_promoted") for tags in registry["versions"].values())
            decided = decided and "RUNNING" not in registry_state(f"sqlite:///{repo / 'mlflow.db'}")["statuses"]
            results[point] = {"killed": killed.returncode != 0, "rerun_ok": rerun.returncode == 0 and caught_up.returncode == 0,
                              "status_clean": "Data and pipelines are up to date" in status.stdout,
                              "all_decided": decided, "versions": len(registry["versions"])}
            print(point, results[point], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="also measure the bounded server")
    parser.add_argument("--kill-all", action="store_true", help="also kill every point under a real dvc repro")
    args = parser.parse_args()
    from tests.test_bad_inputs import CASES

    failures = 0
    passed, failed, seconds = pytest_counts("tests/test_bad_inputs.py")
    failures += failed
    print(f"bad inputs: {CASES} cases in {passed + failed} tests, {failed} failed" +
          (" (each one line and a documented exit code, no traceback" if not failed else " (") + f"; {seconds:.0f} s)")
    passed, failed, seconds = pytest_counts("tests/test_registry_transaction.py", "-k", "killed")
    failures += failed
    print(f"kill -9 in register: {passed}/{passed + failed} tests passed (each kills the register step at every "
          f"kill point and checks its rerun finishes the registration; {seconds:.0f} s)")
    passed, failed, seconds = pytest_counts("tests/test_registry_transaction.py", "-k", "concurrent")
    failures += failed or not passed
    print(f"3 concurrent registrations on SQLite: {'ok' if passed and not failed else 'FAILED'} ({seconds:.0f} s)")
    if args.serve:
        print("serving:", json.dumps(serve_figures()))
    if args.kill_all:
        results = kill_all_figures()
        complete = sum(r["killed"] and r["rerun_ok"] and r["status_clean"] and r["all_decided"] for r in results.values())
        print(f"kill -9 under dvc repro: {complete}/{len(results)} kill points killed, rerun to completion, "
              f"dvc status clean, every version decided, no run RUNNING")
        failures += len(results) - complete
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
