"""Benchmarks behind `demoire bench`: measured throughput, reported as medians with the machine."""

from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np
import torch

from pipeline.config import SynthesizeParams, parse_params
from pipeline.data.synthetic import render_pair, single_threaded, source_for_pair
from pipeline.moire.simulate import content_batch, sample_capture_params, simulate_batch
from pipeline.sources import collect_sources, load_source


def machine() -> dict:
    """What the figures were measured on."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _synth_config(size: int, preset: str) -> SynthesizeParams:
    """Synthesis params at `size` with the preset's ranges and procedural plus bundled sources."""
    return parse_params({"synthesize": {"size": size, "preset": preset}}).synthesize


def bench_synth_cpu(size: int, pairs: int, repeats: int, preset: str = "default", seed: int = 0) -> dict:
    """Pairs per second of one process on one core, end to end per pair as the stage renders them.

    Includes decoding or drawing each source once per run of pairs that share it, with the
    default stage's ratio of pairs to sources; excludes PNG encoding and disk writes.
    """
    cfg = _synth_config(size, preset)
    specs, _ = collect_sources(cfg.sources.bundled, cfg.sources.procedural, [], cfg.sources.screen_kinds)
    stage_pairs = SynthesizeParams().n_pairs
    rates = []
    with single_threaded():
        render_pair(0, specs[0], cfg, seed)  # warm-up: first-call allocations
        for run in range(repeats):
            start = time.perf_counter()
            for index in range(run * pairs, (run + 1) * pairs):
                render_pair(index, specs[source_for_pair(index, stage_pairs, len(specs))], cfg, seed)
            rates.append(pairs / (time.perf_counter() - start))
    return {"size": size, "device": "cpu", "threads": 1, "pairs": pairs, "repeats": repeats,
            "pairs_per_s_per_core": statistics.median(rates), "runs": rates, "machine": machine()}


def bench_synth_batched(
    size: int, batch: int, repeats: int, device: str, preset: str = "default", seed: int = 0
) -> dict:
    """Pairs per second of the batched simulator on `device`, content prepared beforehand."""
    cfg = _synth_config(size, preset)
    specs, _ = collect_sources(cfg.sources.bundled, cfg.sources.procedural, [], cfg.sources.screen_kinds)
    rng = np.random.default_rng(seed)
    sources = [load_source(specs[index % len(specs)], seed) for index in range(batch)]
    captures = [sample_capture_params(cfg, source.shape[:2], rng) for source in sources]
    torch_device = torch.device(device)
    stacked = content_batch(sources, captures).to(torch_device)

    def run() -> None:
        simulate_batch(stacked, captures, size, cfg.optics.supersample)
        if torch_device.type == "cuda":
            torch.cuda.synchronize()

    run()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(batch / (time.perf_counter() - start))
    return {"size": size, "device": device, "threads": torch.get_num_threads(), "batch": batch,
            "repeats": repeats, "pairs_per_s": statistics.median(rates), "runs": rates, "machine": machine()}
