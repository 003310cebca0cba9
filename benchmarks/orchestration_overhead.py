"""Orchestration overhead of `dvc repro`: its wall time against the time spent inside the stages' flow runs.

Run from the project root: `python benchmarks/orchestration_overhead.py [dvc repro options]`, e.g.
`rm -f data/train/checkpoint.pt && python benchmarks/orchestration_overhead.py -f` so that every
stage does its full work. Without PREFECT_API_URL the stages share one temporary server (the
default); with it they report to that server. The flow-run durations come from the Prefect API.
Everything outside the flow runs counts as overhead: server start, Python and torch imports, DVC
hashing and bookkeeping — an upper bound on what Prefect itself costs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows import PROJECT_DIR  # noqa: E402  (sets the project's Prefect defaults, PREFECT_HOME among them)
from flows.dvc_ops import dvc_command, dvc_environment  # noqa: E402
from flows.stage_server import STATE_FILE  # noqa: E402


def api_url() -> str | None:
    """The server the stages reported to: PREFECT_API_URL, else the shared temporary one (alive 60 s after);
    None when no stage started one."""
    state = Path(os.environ["PREFECT_HOME"]) / STATE_FILE
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    return json.loads(state.read_text())["url"] if state.is_file() else None


def flow_runs(url: str, since: datetime) -> list[dict]:
    """Top-level flow runs started after `since`, in start order, with their flow's name."""
    body = {"flow_runs": {"start_time": {"after_": since.isoformat()}, "parent_task_run_id": {"is_null_": True}},
            "sort": "START_TIME_ASC"}
    runs = httpx.post(f"{url}/flow_runs/filter", json=body, timeout=30).json()
    for run in runs:
        run["flow_name"] = httpx.get(f"{url}/flows/{run['flow_id']}", timeout=30).json()["name"]
    return runs


def seconds_after(moment: str, origin: datetime) -> float:
    """Seconds from `origin` to an ISO timestamp of the API."""
    return (datetime.fromisoformat(moment) - origin).total_seconds()


def main(dvc_args: list[str]) -> None:
    """Run `dvc repro` and print the wall time, the flow-run times and the share left for orchestration."""
    since = datetime.now(timezone.utc)
    start = time.perf_counter()
    subprocess.run(dvc_command("repro", *dvc_args), cwd=PROJECT_DIR, check=True, env=dvc_environment())
    wall = time.perf_counter() - start
    url = api_url()
    runs = flow_runs(url, since) if url else []
    if not runs:  # everything was up to date (or DVC restored it from its run-cache): nothing to measure
        sys.exit(f"dvc repro ran no stage in {wall:.1f} s, so there is no flow run to measure: force the stages "
                 "(e.g. `-f`) or change what they depend on")
    inside = sum(run["total_run_time"] for run in runs)
    previous_end = 0.0
    for run in runs:  # the gap before each run: process start, imports, DVC's checks and commits
        start, end = seconds_after(run["start_time"], since), seconds_after(run["end_time"], since)
        print(f"{run['flow_name']:>12}: {run['total_run_time']:7.1f} s in the flow run, "
              f"from {start:6.1f} s to {end:6.1f} s; {start - previous_end:5.1f} s since the previous one ended")
        previous_end = end
    print(f"after the last flow run: {wall - previous_end:.1f} s")
    print(f"wall {wall:.1f} s, inside flow runs {inside:.1f} s, "
          f"outside {wall - inside:.1f} s = {100 * (wall - inside) / wall:.1f} % of the wall time")

if __name__ == "__main__":
    main(sys.argv[1:])
