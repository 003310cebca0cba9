"""Where two machines' renders of the same pairs part: digests of every step, to compare across CPUs.

    python benchmarks/render_trace.py --out trace.json [--pairs 480]           # on one machine
    python benchmarks/render_trace.py --out other.json --against trace.json  # on another: where they part

Renders the first `--pairs` pairs of params.yaml's synthesize section (its seed) with the stage's own code,
one process, and records for each pair the digests of its moiré and clean pixels and of its manifest record,
and, every WINDOW aten ops and after its last, a running digest of every op's result so far but float64 ones:
their last bits differ between CPUs' MKL kernels, and the renderer rounds them away (pipeline.moire.portable),
so the first float32 or integer result that differs is where the bytes part. With `--against` it lists the
pairs whose pixels or record differ and, for each, the window of ops where the two renders first part,
re-rendering that pair to name those ops and the lines of `pipeline/` that called them. Steps outside torch
(OpenCV, NumPy) show as the first torch op that reads what they made, or as no checkpoint differing when
nothing in torch reads it: the first time, OpenCV's IPP kernels were the cause (pipeline/__init__.py). A file
holds for the renderer and the params it was written with (their digest is in it; another params' file is
refused); one kept in git (benchmarks/digests/) is rewritten when a change moves the default set's bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import traceback
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._args import output_file, positive_count, run  # noqa: E402
from pipeline.bench import machine as bench_machine  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.data.synthetic import render_pair, source_for_pair  # noqa: E402
from pipeline.errors import InputDataError, ParamsError  # noqa: E402
from pipeline.io import atomic_path  # noqa: E402
from pipeline.sources import collect_sources  # noqa: E402

WINDOW = 128  # ops between checkpoints: few enough to read a window's ops, many enough to keep the file small
DIGEST_BYTES = 4  # a few hundred pairs' checkpoints in tens of KB: the file is meant to be kept in git
UNINITIALISED = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "resize"}
PAIR_KEYS = {"moire", "clean", "record", "ops", "checkpoints"}
# what the pairs' bytes do not depend on: how many processes render them, and where
NOT_RENDERED = {"workers", "dask_address"}


def digest(data: bytes) -> str:
    """A short digest of some bytes."""
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).hexdigest()


class Trace(TorchDispatchMode):
    """A running digest of every aten op's tensor results but float64 ones, kept every WINDOW ops; with `sites`,
    who called each of those ops."""

    def __init__(self, sites: range | None = None):
        super().__init__()
        self.running = hashlib.blake2b(digest_size=DIGEST_BYTES)
        self.count, self.checkpoints, self.sites, self.named = 0, [], sites, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        # a new buffer is whatever memory held, and a view of one shows it before it is filled: neither is a result
        fresh = not func.is_view and name.rstrip("_") not in UNINITIALISED
        for tensor in (result if isinstance(result, (tuple, list)) else (result,)) if fresh else ():
            if isinstance(tensor, torch.Tensor) and tensor.dtype != torch.float64 and tensor.numel():
                self.running.update(tensor.detach().numpy().tobytes())  # in C order whatever the strides
        if self.sites is not None and self.count in self.sites:
            self.named.append(f"{self.count:6d} {name:24s} {caller()}")
        self.count += 1
        if self.count % WINDOW == 0:
            self.checkpoints.append(self.running.hexdigest())
        return result


def caller() -> str:
    """The innermost line of this project's library on the stack."""
    library = ROOT / "pipeline"
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename)
        if library in path.parents:
            return f"{path.relative_to(ROOT)}:{frame.lineno} {frame.name}"
    return "?"


def render_traced(index: int, context: tuple, sites: range | None = None) -> tuple[dict, Trace]:
    """Pair `index` rendered under a Trace: its digests, and the trace."""
    specs, cfg, seed = context
    trace = Trace(sites)
    with trace:
        moire, clean, record = render_pair(index, specs[source_for_pair(index, cfg.n_pairs, len(specs))], cfg, seed)
    if trace.count % WINDOW:  # the ops after the last full window, the rounding to bytes among them
        trace.checkpoints.append(trace.running.hexdigest())
    pair = {"moire": digest(moire.tobytes()), "clean": digest(clean.tobytes()),
            "record": digest(json.dumps(record, sort_keys=True, default=str).encode()), "ops": trace.count,
            "checkpoints": trace.checkpoints}
    return pair, trace


def well_formed(pair: object) -> bool:
    """Whether a pair of a digests file has the keys and types this script writes."""
    return (isinstance(pair, dict) and PAIR_KEYS <= pair.keys() and isinstance(pair["ops"], int)
            and isinstance(pair["checkpoints"], list) and all(isinstance(c, str) for c in pair["checkpoints"]))


def first_parting(ours: list[str], theirs: list[str]) -> int | None:
    """Index of the first checkpoint whose digest differs (or that one render has and the other not), or None."""
    parted = next((position for position, (mine, other) in enumerate(zip(ours, theirs)) if mine != other), None)
    return parted if parted is not None or len(ours) == len(theirs) else min(len(ours), len(theirs))


def compare(pairs: list[dict], earlier: dict, context: tuple) -> list[str]:
    """Lines naming each pair that differs from `earlier` and the ops where the renders first part."""
    lines = []
    for index, (ours, theirs) in enumerate(zip(pairs, earlier["pairs"])):
        differs = [key for key in ("moire", "clean", "record") if ours[key] != theirs[key]]
        if not differs:
            continue
        lines.append(f"pair {index}: {', '.join(differs)} differ ({ours['ops']} ops here, {theirs['ops']} there)")
        window = first_parting(ours["checkpoints"], theirs["checkpoints"])
        if window is None:  # outside torch: OpenCV (IPP, the JPEG), NumPy
            lines.append("  no checkpoint differs: every op's result is the same, so a step outside torch parts them")
            continue
        start, end = window * WINDOW, min(window * WINDOW + WINDOW, ours["ops"])
        _, trace = render_traced(index, context, range(start, end))
        lines.append(f"  they first part within ops {start}–{end - 1}:")
        lines += [f"    {line}" for line in trace.named]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=output_file, required=True, help="JSON file for the digests")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--pairs", type=positive_count, help="the first N pairs (default: all of synthesize.n_pairs)")
    parser.add_argument("--against", type=Path, help="digests JSON from another machine to compare with")
    args = parser.parse_args()
    earlier = None
    if args.against:  # read before minutes of rendering
        try:
            earlier = json.loads(args.against.read_text())
            if not earlier["pairs"] or not all(well_formed(pair) for pair in earlier["pairs"]):
                raise ValueError("no pairs, or a pair without the digests this script writes")
            if earlier.get("window") != WINDOW:
                raise ValueError(f"checkpoints every {earlier.get('window')} ops, not every {WINDOW}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputDataError(f"--against {args.against}: not a digests file of this script ({exc})") from None
    params = load_params(args.params)
    cfg = params.synthesize
    if cfg.moire_layer_bank:  # a bank renders each layer once a process: a re-rendered pair's ops would shift
        raise ParamsError(f"synthesize.moire_layer_bank = {cfg.moire_layer_bank}: this script traces renders "
                          "without a bank; set it to null")
    rendered = digest(json.dumps([params.seed, cfg.model_dump(mode="json", exclude=NOT_RENDERED)], sort_keys=True,
                                 default=str).encode())
    if earlier is not None and earlier.get("params") != rendered:
        raise InputDataError(f"--against {args.against} was written for other synthesize params or seed than "
                             f"{args.params}'s; compare renders of the same params")
    specs, _ = collect_sources(cfg.sources.bundled, cfg.sources.procedural, cfg.sources.folders,
                               cfg.sources.screen_kinds)
    context = (specs, cfg, params.seed)
    count = min(args.pairs or cfg.n_pairs, cfg.n_pairs)
    if earlier is not None:
        count = min(count, len(earlier["pairs"]))  # only what the other machine rendered can be compared
    pairs = [render_traced(index, context)[0] for index in range(count)]
    machine = {key: value for key, value in bench_machine().items() if key != "load_1min"} | {"numpy": np.__version__}
    with atomic_path(args.out) as tmp:  # one pair a line: a diff of two machines' files shows the pairs that part
        lines = [json.dumps(pair, separators=(",", ":")) for pair in pairs]
        tmp.write_text(f'{{"machine": {json.dumps(machine)}, "params": "{rendered}", "window": {WINDOW}, "pairs": [\n'
                       + ",\n".join(lines) + "\n]}\n")
    if earlier is not None:
        print(f"here: {machine['cpu']}; there: {earlier.get('machine', {}).get('cpu', '?')}")
        lines = compare(pairs, earlier, context)
        print("\n".join(lines) if lines else f"all {count} pairs the same, step by step")
        sys.exit(1 if lines else 0)


if __name__ == "__main__":
    run(main)
