"""Training and synthesis at dataset sizes (issue 14): resumable synthesis, and lazy training data.

Run from the project root:

    python benchmarks/data_scale.py synth --n 20000 --size 512 --workers 2 --resumed-only  # the issue's size
    python benchmarks/data_scale.py loader --n 2000 5000 20000 --size 512      # the issue's size last
    python benchmarks/data_scale.py train-rate --n 64 --size 512              # does decoding slow training?

`synth` renders N pairs with `demoire synthesize` (default preset) uninterrupted, then again killed
with SIGKILL (the whole process group) once `--kill-at` of the pairs are in finished shards, and
resumed; it reports the times and whether every file of the resumed set equals the uninterrupted one.
`--resumed-only` skips the uninterrupted run (at the issue's size it would double a 40-minute job).

`loader` measures the training loader alone (make_train_loader: decode, random crop, flips, batching;
no model) over a split of N stored 512² pairs, lazily (StoredPairs: decoded on demand, in the loader
workers when there are any) and, for comparison at small N, read into memory first. The split is a
few rendered pairs hard-linked N times: this measures decoding and batching, not synthesis (and
reads come from the page cache). Each measurement runs in a fresh process; peak RSS is that of the
process and its loader workers together, sampled every 50 ms. It also times PNG decoding against
raw .npy reading (a packed format's best case) and the checkpoint fingerprint's digest of the files.

`train-rate` trains the default U-Net for one epoch on CPU over the same kind of split, decoded lazily
and held in memory, to show what the decoding costs a training step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def synthesize_command(out: Path, args: argparse.Namespace) -> list[str]:
    """`demoire synthesize` as this benchmark runs it."""
    return [sys.executable, "-m", "pipeline.cli", "synthesize", "--out", str(out), "--n", str(args.n), "--size",
            str(args.size), "--workers", str(args.workers), "--seed", str(args.seed), "--preset", args.preset]


def finished_pairs(out: Path) -> int:
    """Pairs in finished shards of the run writing `out` (its markers hold their records)."""
    markers = out.parent.glob(f".{out.name}.partial-*/shards/*.json")
    return sum(len(json.loads(marker.read_text())) for marker in markers)


def timed_run(command: list[str], log: Path) -> float:
    """Seconds a command takes (its output goes to `log`); a failure exits with the log's tail, since the log goes
    with the temp folder."""
    start = time.perf_counter()
    with log.open("a") as sink:
        done = subprocess.run(command, stdout=sink, stderr=sink, env={**os.environ, "DEMOIRE_PROGRESS": "log"})
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed (exit {done.returncode}); its output ends:\n"
                 + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
    return time.perf_counter() - start


def killed_run(command: list[str], out: Path, pairs: int, log: Path) -> tuple[float, int]:
    """Run `command`, SIGKILL its process group once `pairs` are finished; (seconds until then, pairs finished)."""
    start = time.perf_counter()
    with log.open("a") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=sink, start_new_session=True,
                                   env={**os.environ, "DEMOIRE_PROGRESS": "log"})
        # Every poll reads all shard markers: at 20 000 pairs a 0.2 s poll took a quarter of a core.
        while finished_pairs(out) < pairs and process.poll() is None:
            time.sleep(2.0)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return time.perf_counter() - start, finished_pairs(out)


def synth(args: argparse.Namespace) -> dict:
    """Uninterrupted against killed-and-resumed synthesis of the same set (with --resumed-only, the latter alone)."""
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        log = tmp / "runs.log"
        whole, resumed = tmp / "whole" / "set", tmp / "resumed" / "set"
        uninterrupted = None if args.resumed_only else timed_run(synthesize_command(whole, args), log)
        killed_after, finished = killed_run(synthesize_command(resumed, args), resumed, round(args.kill_at * args.n), log)
        resume = timed_run(synthesize_command(resumed, args), log)
        identical = None if args.resumed_only else tree_bytes(whole) == tree_bytes(resumed)
        size = sum(p.stat().st_size for p in resumed.rglob("*") if p.is_file())
        written = {kind: sum(1 for _ in (resumed / kind).iterdir()) for kind in ("moire", "clean")}
        leftovers = sorted(p.name for p in resumed.parent.iterdir() if p.name != "set")
    return {"pairs": args.n, "size": args.size, "workers": args.workers, "preset": args.preset,
            "uninterrupted_s": None if uninterrupted is None else round(uninterrupted, 1),
            "killed_after_s": round(killed_after, 1),
            "pairs_finished_when_killed": finished, "resume_s": round(resume, 1),
            "killed_plus_resume_s": round(killed_after + resume, 1), "bytes_identical": identical,
            "images_written": written, "set_mb": round(size / 1e6, 1), "mb_per_pair": round(size / 1e6 / args.n, 3),
            "leftovers": leftovers}


def seed_pairs(folder: Path, size: int, count: int) -> list[tuple[Path, Path]]:
    """`count` rendered pairs (default preset) under `folder`."""
    from pipeline.config import parse_params
    from pipeline.data.synthetic import local_shard_runner, synthesize_dataset

    params = parse_params({"synthesize": {"n_pairs": count, "size": size, "workers": 2}})
    synthesize_dataset(params.synthesize, params.seed, folder, local_shard_runner(params.synthesize, params.seed, 2))
    return [(folder / "moire" / f"{i:06d}.png", folder / "clean" / f"{i:06d}.png") for i in range(count)]


def stored_split(folder: Path, seeds: list[tuple[Path, Path]], n: int) -> Path:
    """A pairs index of n pairs under `folder`, hard links to the seed pairs in turn (copies where links fail)."""
    import pandas as pd

    rows = []
    for i in range(n):
        row = {"pair_id": i, "moire_path": f"moire/{i:06d}.png", "clean_path": f"clean/{i:06d}.png", "split": "train"}
        for source, key in zip(seeds[i % len(seeds)], ("moire_path", "clean_path")):
            target = folder / row[key]
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        rows.append(row)
    pd.DataFrame(rows).to_parquet(folder / "pairs.parquet", index=False)
    return folder / "pairs.parquet"


class PeakRss:
    """Peak RSS of this process and its children together, sampled in a thread."""

    def __enter__(self) -> PeakRss:
        import psutil

        self.peak, self._stop = 0, threading.Event()
        me = psutil.Process()

        def sample() -> None:
            while not self._stop.wait(0.05):
                try:
                    total = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
                except psutil.Error:
                    continue
                self.peak = max(self.peak, total)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def endless(loader):
    """The loader's batches, epoch after epoch."""
    epoch = 1
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def loader_once(args: argparse.Namespace) -> dict:
    """One loader measurement (run in a fresh process): pairs/s after a warm-up, and peak RSS."""
    import torch

    from pipeline.data.dataset import StoredPairs
    from pipeline.training.batches import make_train_loader
    from pipeline.training.stage import load_split

    torch.set_num_threads(1)
    with PeakRss() as rss:
        start = time.perf_counter()
        pairs = load_split(args.index, args.index.parent, "train")
        if args.mode == "memory":
            pairs = list(pairs)
        loaded = time.perf_counter() - start
        loader = make_train_loader(pairs, args.patch, args.batch_size, seed=0, num_workers=args.workers)
        batches = endless(loader)
        for _ in range(args.warmup):
            next(batches)
        start = time.perf_counter()
        for _ in range(args.batches):
            next(batches)
        seconds = time.perf_counter() - start
        del batches, loader
    digest_s = None
    if args.mode == "lazy" and args.workers == 0:
        start = time.perf_counter()
        StoredPairs.digest(pairs)
        digest_s = round(time.perf_counter() - start, 1)
    return {"n": args.n, "mode": args.mode, "workers": args.workers, "pairs_per_s": round(args.batches * args.batch_size / seconds, 1),
            "load_s": round(loaded, 1), "peak_rss_mb": round(rss.peak / 2**20), "digest_s": digest_s}


def train_rate(args: argparse.Namespace) -> dict:
    """Training images/s (default U-Net, CPU, num_workers 0; one epoch, validation on one pair) with the split
    decoded lazily against in memory (its loading not counted)."""
    import torch

    from pipeline.config import parse_params
    from pipeline.models import build_model, model_spec
    from pipeline.training.batches import PairBatches
    from pipeline.training.loop import train_model
    from pipeline.training.stage import load_split

    params = parse_params({"train": {"epochs": 1, "patch_size": args.patch, "batch_size": args.batch_size}})
    rates = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        seeds = seed_pairs(tmp / "seed", args.size, args.seeds)
        lazy = load_split(stored_split(tmp / "split", seeds, args.n), tmp / "split", "train")
        for mode, pairs in (("lazy", lazy), ("memory", list(lazy))):
            model = build_model(model_spec("unet", params.train.channels, params.train.depth), seed=0)
            batches = PairBatches(pairs, args.patch, args.batch_size, seed=0)
            start = time.perf_counter()
            train_model(model, batches, lazy[:1], params.train, 0, torch.device("cpu"), tmp / f"{mode}.pt")
            rates[mode] = round(batches.steps_per_epoch * args.batch_size / (time.perf_counter() - start), 2)
    return {"n": args.n, "size": args.size, "patch": args.patch, "batch_size": args.batch_size, "images_per_s": rates}


def decode_costs(seeds: list[tuple[Path, Path]], repeats: int = 5) -> dict:
    """Milliseconds per pair: PNG decode (read_rgb) against raw uint8 .npy reading; bytes per pair of each."""
    import numpy as np

    from pipeline.io import read_rgb

    raw = []
    for moire, clean in seeds:
        for path in (moire, clean):
            np.save(path.with_suffix(".npy"), read_rgb(path))
            raw.append(path.with_suffix(".npy"))

    def per_pair(read, paths) -> float:
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            for path in paths:
                read(path)
            timings.append((time.perf_counter() - start) / len(seeds) * 1000)
        return round(sorted(timings)[len(timings) // 2], 2)

    pngs = [p for pair in seeds for p in pair]
    return {"png_ms_per_pair": per_pair(read_rgb, pngs), "npy_ms_per_pair": per_pair(np.load, raw),
            "png_kb_per_pair": round(sum(p.stat().st_size for p in pngs) / len(seeds) / 1e3),
            "npy_kb_per_pair": round(sum(p.stat().st_size for p in raw) / len(seeds) / 1e3)}


def loader(args: argparse.Namespace) -> dict:
    """Lazy loader throughput and peak RSS as N grows; in memory at the smallest N for comparison."""
    results = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        seeds = seed_pairs(tmp / "seed", args.size, args.seeds)
        costs = decode_costs(seeds)
        for n in args.n:
            index = stored_split(tmp / f"split-{n}", seeds, n)
            modes = [("lazy", w) for w in args.workers] + ([("memory", w) for w in args.workers] if n <= args.memory_up_to else [])
            for mode, workers in modes:
                command = [sys.executable, __file__, "loader-once", "--index", str(index), "--n", str(n), "--mode", mode,
                           "--workers", str(workers), "--patch", str(args.patch), "--batch-size", str(args.batch_size),
                           "--batches", str(args.batches)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"loader measurement failed ({mode}, N={n}, workers={workers}):\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.splitlines()[-1])
                print(json.dumps(result), file=sys.stderr)
                results.append(result)
    return {"size": args.size, "patch": args.patch, "batch_size": args.batch_size, "batches": args.batches,
            "decode": costs, "runs": results}


def main() -> None:
    """Parse the subcommand and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="uninterrupted against killed-and-resumed synthesis")
    s.add_argument("--n", type=int, default=200)
    s.add_argument("--size", type=int, default=512)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--preset", default="default")
    s.add_argument("--kill-at", type=float, default=0.5, help="fraction of pairs finished when the run is killed")
    s.add_argument("--tmp", default=None, help="folder for the temporary sets (default: the system's)")
    s.add_argument("--resumed-only", action="store_true",
                   help="only the killed-and-resumed run (no uninterrupted reference, no byte comparison): for large N")
    s.set_defaults(run=synth)
    ld = sub.add_parser("loader", help="lazy loader throughput and peak RSS as N grows")
    ld.add_argument("--n", type=int, nargs="+", default=[1000, 2000, 5000])
    ld.add_argument("--size", type=int, default=512)
    ld.add_argument("--seeds", type=int, default=8, help="rendered pairs the split is made of")
    ld.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ld.add_argument("--memory-up-to", type=int, default=1000, help="also measure in-memory loading up to this N")
    ld.add_argument("--patch", type=int, default=128)
    ld.add_argument("--batch-size", type=int, default=8)
    ld.add_argument("--batches", type=int, default=40)
    ld.add_argument("--tmp", default=None)
    ld.set_defaults(run=loader)
    tr = sub.add_parser("train-rate", help="training images/s, split decoded lazily against in memory")
    tr.add_argument("--n", type=int, default=64)
    tr.add_argument("--size", type=int, default=512)
    tr.add_argument("--seeds", type=int, default=8)
    tr.add_argument("--patch", type=int, default=128)
    tr.add_argument("--batch-size", type=int, default=8)
    tr.add_argument("--tmp", default=None)
    tr.set_defaults(run=train_rate)
    one = sub.add_parser("loader-once", help=argparse.SUPPRESS)
    one.add_argument("--index", type=Path, required=True)
    one.add_argument("--n", type=int, required=True)
    one.add_argument("--mode", choices=["lazy", "memory"], required=True)
    one.add_argument("--workers", type=int, required=True)
    one.add_argument("--patch", type=int, required=True)
    one.add_argument("--batch-size", type=int, required=True)
    one.add_argument("--batches", type=int, required=True)
    one.add_argument("--warmup", type=int, default=3)
    one.set_defaults(run=loader_once)
    args = parser.parse_args()
    print(json.dumps(args.run(args)))


if __name__ == "__main__":
    main()
