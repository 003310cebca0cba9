"""Benchmarks behind `demoire bench`: measured throughput, reported as medians with the machine."""

from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np
import torch

from pipeline.config import SynthesizeParams, parse_params
from pipeline.data.synthetic import render_pair, single_threaded
from pipeline.moire.simulate import sample_capture_params, screen_content, simulate_batch
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
    """Pairs per second of one process on one core, end to end per pair (sources already decoded)."""
    cfg = _synth_config(size, preset)
    specs, _ = collect_sources(cfg.sources.bundled, cfg.sources.procedural, [])
    for spec in specs[:pairs]:
        load_source(spec, seed)  # decode/draw sources once: the stage caches them the same way
    rates = []
    with single_threaded():
        render_pair(0, specs[0], cfg, seed)  # warm-up: first-call allocations
        for _ in range(repeats):
            start = time.perf_counter()
            for index in range(pairs):
                render_pair(index, specs[index % len(specs)], cfg, seed)
            rates.append(pairs / (time.perf_counter() - start))
    return {"size": size, "device": "cpu", "threads": 1, "pairs": pairs, "repeats": repeats,
            "pairs_per_s_per_core": statistics.median(rates), "runs": rates, "machine": machine()}


def bench_synth_batched(
    size: int, batch: int, repeats: int, device: str, preset: str = "default", seed: int = 0
) -> dict:
    """Pairs per second of the batched simulator on `device`, content prepared beforehand."""
    cfg = _synth_config(size, preset)
    specs, _ = collect_sources(cfg.sources.bundled, cfg.sources.procedural, [])
    rng = np.random.default_rng(seed)
    captures, content = [], []
    for index in range(batch):
        source = load_source(specs[index % len(specs)], seed)
        capture = sample_capture_params(cfg, source.shape[:2], rng)
        captures.append(capture)
        content.append(torch.from_numpy(screen_content(source, capture)).permute(2, 0, 1))
    torch_device = torch.device(device)
    stacked = torch.stack(content).to(torch_device)
    generator = torch.Generator(device=torch_device).manual_seed(seed)

    def run() -> None:
        simulate_batch(stacked, captures, size, cfg.optics.supersample, generator)
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
