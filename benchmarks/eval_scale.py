"""`demoire evaluate` at dataset sizes: wall time, seconds per pair and peak memory as the pair count grows.

    python benchmarks/eval_scale.py --n 20 100 --size 1920x1080      # RSS flat from 20 to 100 pairs?
    python benchmarks/eval_scale.py --n 2000 --size 1920x1080        # the issue's FHDMi-test size
    python benchmarks/eval_scale.py --n 100 --size 3840x2160         # the issue's 4K size

N synthetic pairs are written once as PNGs (a smooth clean image; its capture darker, crossed by a
sinusoidal moiré; generation is timed apart, as it is not what is measured). Then, for each count,
`demoire -q evaluate --limit N --json --csv …` runs in its own process on the first N of them, with the
model given (default: a freshly initialised U-Net of the default size, scored as served with
params.yaml's infer tiles). Reported per count: wall time, time to the first scored pair (start-up and
model load), the median seconds between consecutive per-image rows appearing in the CSV's partial file,
and peak RSS of the evaluating process (wait4's ru_maxrss), beside its RSS when the first and the last
rows appeared, and the load average (the machine may be shared). `--workdir` keeps the pairs for another
run (existing ones are not written again). A run killed from outside resumes when the same command is run
again with the same `--workdir` (`demoire evaluate --csv` keeps the rows already scored): only its new rows
are timed, and `progress-N.log` keeps the figures of every run, the killed one's included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._args import run  # noqa: E402
from pipeline.bench import parse_size  # noqa: E402

POLL_S = 0.05
LOG_EVERY_ROWS = 50


def synthetic_pair(index: int, width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(moiré, clean) uint8: smooth colour waves, and their capture 15 % darker with a tilted sinusoidal moiré."""
    rng = np.random.default_rng((seed, index))
    ys = np.arange(height, dtype=np.float32)[:, None, None] / height
    xs = np.arange(width, dtype=np.float32)[None, :, None] / width
    base, swing = rng.uniform(60, 190, 3).astype(np.float32), rng.uniform(20, 50, 3).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3).astype(np.float32)
    clean = base + swing * np.sin(2 * np.pi * (rng.uniform(1, 4) * xs + rng.uniform(1, 3) * ys) + phase)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 40)  # moiré periods in pixels
    wave = np.cos(2 * np.pi * (xs * width * np.cos(angle) + ys * height * np.sin(angle)) / period)
    moire = 0.85 * clean + 20 * wave * np.array([1.0, 0.6, 0.8], np.float32)  # coloured, as on a screen
    return (np.clip(moire, 0, 255).astype(np.uint8), np.clip(clean, 0, 255).astype(np.uint8))


def write_pairs(root: Path, count: int, width: int, height: int) -> float:
    """Write pairs 0..count-1 missing from `root` (moire/ + clean/ PNGs); the seconds it took."""
    began = time.perf_counter()
    for index in range(count):
        name = f"{index:05d}.png"
        if (root / "moire" / name).is_file() and (root / "clean" / name).is_file():
            continue
        for folder, image in zip(("moire", "clean"), synthetic_pair(index, width, height)):
            target = root / folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{name}.partial")  # a killed run never leaves a truncated PNG
            Image.fromarray(image).save(partial, format="PNG", compress_level=1)
            os.replace(partial, target)
    return time.perf_counter() - began


def default_model(folder: Path) -> Path:
    """A freshly initialised U-Net of the default size saved in `folder` (speed and memory do not depend on weights)."""
    from pipeline.models import build_model, model_spec, save_model

    spec = model_spec("unet")
    save_model(build_model(spec, seed=0), spec, folder)
    return folder


def partial_rows(folder: Path, name: str) -> dict[Path, int]:
    """Per-image rows in each partial CSV beside `folder/name` (`demoire evaluate --csv` writes one per digest)."""
    from pipeline.evaluation.resume import partial_csvs

    found = {}
    for partial in partial_csvs(folder / name):
        try:
            found[partial] = max(partial.read_bytes().count(b"\n") - 1, 0)  # the header line is not a row
        except OSError:  # removed between the glob and the read: the run has published its CSV
            pass
    return found


def this_runs_rows(before: dict[Path, int], now: dict[Path, int]) -> tuple[int, int] | None:
    """(rows a killed run had left, rows now) of the partial file this run writes: the one that grew since
    `before` (another digest's partial, left by an earlier run, does not grow); None before its first row."""
    for partial, rows in now.items():
        if rows > before.get(partial, 0):
            return before.get(partial, 0), rows
    return None


def log_progress(path: Path, line: str) -> None:
    """Append one line to the progress log, on disk at once (a run killed from outside keeps it)."""
    with path.open("a") as handle:
        handle.write(line + "\n")


def evaluate_run(model: Path, pairs: Path, count: int, workdir: Path) -> dict:
    """One `demoire evaluate` process on the first `count` pairs, watched until it exits; when a killed run of the
    same command left scored rows, it resumes after them (`resumed_rows`) and only the new rows are timed. Every
    LOG_EVERY_ROWS rows a line (seconds, rows, RSS, load) goes to `progress-<count>.log`, so a run killed from
    outside still leaves its figures."""
    csv = workdir / f"per_image_{count}.csv"
    before = partial_rows(workdir, csv.name)
    progress_log = workdir / f"progress-{count}.log"
    log_progress(progress_log, f"# started {time.strftime('%Y-%m-%d %H:%M:%S')}, partial files: "
                               f"{ {p.name: rows for p, rows in before.items()} }")
    command = [sys.executable, "-m", "pipeline.cli", "-q", "evaluate", "--model", str(model), "--pairs", str(pairs),
               "--limit", str(count), "--device", "cpu", "--json", "--csv", str(csv),
               "--max-side", "0"]  # full size: the heavier path, as the figures in docs/benchmarks.md were taken
    began = time.perf_counter()
    with (workdir / "stdout.txt").open("wb") as stdout, (workdir / "stderr.txt").open("wb") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=stderr)
    watched = psutil.Process(process.pid)
    resumed_rows, seen, appeared, rss_at_row = None, 0, [], []
    while True:  # wait4 rather than Popen.poll: it gives the exited process's own peak RSS
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        counts = this_runs_rows(before, partial_rows(workdir, csv.name))
        if counts is None:
            time.sleep(POLL_S)
            continue
        if resumed_rows is None:
            resumed_rows = seen = counts[0]
        rows = counts[1]
        if rows > seen:
            appeared += [time.perf_counter() - began] * (rows - seen)
            rss_at_row += [watched.memory_info().rss] * (rows - seen)
            if rows // LOG_EVERY_ROWS > seen // LOG_EVERY_ROWS:
                rss = f"RSS {rss_at_row[-1] / 2**20:.0f} MB (max sampled {max(rss_at_row) / 2**20:.0f})"
                log_progress(progress_log, f"{appeared[-1]:.1f} s, {rows} rows, {rss}, load {os.getloadavg()[0]:.1f}")
            seen = rows
        time.sleep(POLL_S)
    wall = time.perf_counter() - began
    log_progress(progress_log, f"# exited after {wall:.1f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MB")
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"demoire evaluate failed:\n{(workdir / 'stderr.txt').read_text()[-2000:]}")
    summary = json.loads((workdir / "stdout.txt").read_text().strip().splitlines()[-1])
    between = np.diff(appeared) if len(appeared) > 1 else np.array([np.nan])
    return {"count": count, "scored": summary["count"], "resumed_rows": resumed_rows or 0, "wall_s": wall,
            "first_row_s": appeared[0] if appeared else float("nan"),
            "per_pair_median_s": float(statistics.median(between)),
            "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
            "rss_first_row_mb": rss_at_row[0] / 2**20 if rss_at_row else float("nan"),
            "rss_last_row_mb": rss_at_row[-1] / 2**20 if rss_at_row else float("nan"),
            "csv_rows": sum(1 for _ in csv.open()) - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[20, 100], help="pair counts to evaluate, each a run")
    parser.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT of every pair")
    parser.add_argument("--model", help="model folder or models:/ URI [default: a fresh default U-Net]")
    parser.add_argument("--workdir", type=Path, help="keep pairs, model and CSVs here [default: a temp folder, removed]")
    args = parser.parse_args()
    height, width = parse_size(args.size)
    # `demoire evaluate` runs from the project root: paths given relative to here are made absolute first
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="eval-scale-"))).resolve()
    if args.model and not args.model.startswith("models:/"):
        args.model = Path(args.model).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        pairs = workdir / f"pairs-{width}x{height}"
        generated = write_pairs(pairs, max(args.n), width, height)
        print(f"generation: {max(args.n)} pairs of {width}x{height} in {generated:.1f} s (not part of the runs)")
        model = args.model or (workdir / "model" if (workdir / "model").is_dir() else default_model(workdir / "model"))
        print("| pairs | size | resumed after | wall s | first row s | s/pair (median) | peak RSS MB | "
              "RSS at 1st / last row MB | load avg (1 min, at the end) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for count in args.n:
            run = evaluate_run(model, pairs, count, workdir)
            assert run["scored"] == run["csv_rows"] == count, run
            print(f"| {count} | {width}x{height} | {run['resumed_rows']} | {run['wall_s']:.1f} | "
                  f"{run['first_row_s']:.1f} | "
                  f"{run['per_pair_median_s']:.2f} | {run['peak_rss_mb']:.0f} | "
                  f"{run['rss_first_row_mb']:.0f} / {run['rss_last_row_mb']:.0f} | {os.getloadavg()[0]:.1f} |",
                  flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    run(main)
