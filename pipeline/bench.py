"""Benchmarks behind `demoire bench`: measured throughput, reported as medians with the machine."""

from __future__ import annotations

import io
import itertools
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pipeline.config import InferParams, SynthesizeParams, TrainParams, largest_allowed, parse_params
from pipeline.data.synthetic import ipp_kernels, render_pair, single_threaded, source_for_pair
from pipeline.errors import ParamsError, shown_value
from pipeline.inference import in_layout, input_format
from pipeline.io import save_png
from pipeline.models import ModelSpec, build_model, count_parameters, model_spec, save_model
from pipeline.models.complexity import count_macs
from pipeline.moire.display import SUBPIXEL_LAYOUTS, fused_subpixel_coverage
from pipeline.moire.fused import compile_mode
from pipeline.moire.layer_bank import shared_layer_bank
from pipeline.moire.simulate import content_batch, sample_capture_params, simulate_batch
from pipeline.sources import collect_sources, load_source
from pipeline.training.batches import SyntheticBatches
from pipeline.training.device import resolve_device
from pipeline.training.distributed import World
from pipeline.training.loop import GRAD_CLIP_NORM, autocast, effective_amp, effective_compile, wrap_for_training
from pipeline.training.losses import multiscale_loss, weighted_loss
from pipeline.training.optim import make_optimizer


def machine() -> dict:
    """What the figures were measured on: the CPU's model and vector unit (the docs compare CPUs by them), the
    1-minute load average when called (`demoire bench` puts the one from before its runs there), the GPU if any."""
    info = {"cpu": _cpu_model(), "arch": platform.machine(), "cores": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "mkl_cbwr": os.environ.get("MKL_CBWR"),
            "opencv_ipp": ipp_kernels(),
            "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str:
    """The CPU's name (/proc/cpuinfo on Linux, where platform.processor() is empty) with its family and model
    numbers (a cloud VM's name may be the vendor's alone: "AMD EPYC" covers Zen 1 to Zen 5), else what platform
    knows."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                      if ":" in line)
    except OSError:
        fields = {}
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    numbers = f" (family {fields['cpu family']} model {fields['model']})" if "cpu family" in fields else ""
    return fields["model name"] + numbers


def machine_text(info: dict) -> str:
    """`machine()` as the human-readable lines print it."""
    gpu = f"{info['gpu']}, " if info.get("gpu") else ""
    load = f", load {info['load_1min']:.1f}" if info.get("load_1min") is not None else ""
    return (f"{gpu}{info['cpu']}, {info['cores']} cores, {info['cpu_capability']}{load}, torch {info['torch']}, "
            f"Python {info['python']}")


# `bench synth`'s options, named in its errors as the user gave them (not as `params: synthesize.size = …`).
SYNTH_OPTIONS = {"synthesize.size": "--size", "synthesize.preset": "--preset",
                 "synthesize.moire_layer_bank": "--layer-bank"}


def _synth_config(size: int, preset: str, layer_bank: int | None = None) -> SynthesizeParams:
    """Synthesis params at `size` with the preset's ranges and procedural plus bundled sources."""
    return parse_params({"synthesize": {"size": size, "preset": preset, "moire_layer_bank": layer_bank}},
                        options=SYNTH_OPTIONS).synthesize


def _fill_bank(cfg: SynthesizeParams, seed: int, device: torch.device) -> dict:
    """Render the whole layer bank of (cfg, seed) before timing; its one-off cost, or {} without a bank."""
    bank = shared_layer_bank(cfg, seed)
    if bank is None:
        return {}
    start = time.perf_counter()
    bank.fill(cfg.size, cfg.optics.supersample, device)
    _synchronize(device)
    return {"layer_bank": bank.slots, "layer_bank_s": time.perf_counter() - start}


def _compile_coverage(device: torch.device) -> dict:
    """Compile the fused subpixel coverage for every layout before timing, as a long run does once per
    process; its time, or {} where it runs eagerly (`pipeline.moire.fused`)."""
    if compile_mode() == "0" or device.type != "cpu":
        return {}
    probe = torch.zeros(1, 1024, 1024, device=device)
    start = time.perf_counter()
    for layout in SUBPIXEL_LAYOUTS:  # distinct tensors: an aliased pair would compile a graph of its own
        fused_subpixel_coverage.run_compiled(probe, probe.clone(), torch.ones(1, device=device), layout,
                                             torch.ones(1, device=device))
    return {"compile_s": time.perf_counter() - start}


def bench_synth_cpu(size: int, pairs: int, repeats: int, preset: str = "default", seed: int = 0,
                    layer_bank: int | None = None, encode: bool = False) -> dict:
    """Pairs per second of one process on one core, end to end per pair as the stage renders them.

    Includes decoding or drawing each source once per run of pairs that share it, with the
    default stage's ratio of pairs to sources; excludes disk writes, and PNG encoding unless `encode`
    (both images encoded in memory as the stage writes them, `pipeline.io.save_png`). Also reports
    pairs per second of this process's CPU time, which other work on a shared machine disturbs far
    less than the wall clock. With `layer_bank`, the bank is rendered first and its time reported
    apart (`layer_bank_s`): a dataset pays it once per process, whatever its size; so is compiling
    the fused coverage (`compile_s`), where it is compiled.
    """
    cfg = _synth_config(size, preset, layer_bank)
    specs, _ = collect_sources(cfg.sources.bundled, cfg.sources.procedural, [], cfg.sources.screen_kinds)
    stage_pairs = SynthesizeParams().n_pairs
    rates, cpu_rates = [], []
    with single_threaded():
        compiled = _compile_coverage(torch.device("cpu"))
        bank = _fill_bank(cfg, seed, torch.device("cpu"))
        render_pair(0, specs[0], cfg, seed)  # warm-up: first-call allocations
        for run in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            for index in range(run * pairs, (run + 1) * pairs):
                moire, clean, _ = render_pair(index, specs[source_for_pair(index, stage_pairs, len(specs))], cfg, seed)
                if encode:
                    for image in (moire, clean):
                        save_png(image, io.BytesIO())
            rates.append(pairs / (time.perf_counter() - start))
            cpu_rates.append(pairs / (time.process_time() - cpu_start))
    return {"size": size, "device": "cpu", "threads": 1, "pairs": pairs, "repeats": repeats, "png_encoding": encode,
            "pairs_per_s_per_core": statistics.median(rates), "runs": rates,
            "pairs_per_cpu_s": statistics.median(cpu_rates), "cpu_runs": cpu_rates, **compiled, **bank, "machine": machine()}


def bench_synth_batched(
    size: int, batch: int, repeats: int, device: str, preset: str = "default", seed: int = 0,
    layer_bank: int | None = None,
) -> dict:
    """Pairs per second of the batched simulator on `device`, content (and any layer bank) prepared beforehand."""
    cfg = _synth_config(size, preset, layer_bank)
    specs, _ = collect_sources(cfg.sources.bundled, cfg.sources.procedural, [], cfg.sources.screen_kinds)
    rng = np.random.default_rng(seed)
    sources = [load_source(specs[index % len(specs)], seed) for index in range(batch)]
    captures = [sample_capture_params(cfg, source.shape[:2], rng) for source in sources]
    torch_device = torch.device(device)
    filled = _fill_bank(cfg, seed, torch_device)
    bank = shared_layer_bank(cfg, seed)
    if bank is not None:
        captures = [bank.assign(c, source.shape[:2], rng) for c, source in zip(captures, sources)]
    stacked = content_batch(sources, captures).to(torch_device)

    def run() -> None:
        simulate_batch(stacked, captures, size, cfg.optics.supersample, bank)
        if torch_device.type == "cuda":
            torch.cuda.synchronize()

    run()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(batch / (time.perf_counter() - start))
    return {"size": size, "device": device, "threads": torch.get_num_threads(), "batch": batch,
            "repeats": repeats, "pairs_per_s": statistics.median(rates), "runs": rates, **filled, "machine": machine()}


# The largest sizes a benchmark times, in pixels, each with where it comes from: past them a run only fails to
# allocate its tensors, with a traceback (99999x99999 asked an `infer` for 30 GB).
INFER_MAX_PIXELS = (InferParams.model_fields["max_pixels"].default,
                    "the default infer.max_pixels, the largest photo `predict` takes")
TRAIN_MAX_PIXELS = (largest_allowed(TrainParams, "patch_size") ** 2,
                    f"{largest_allowed(TrainParams, 'patch_size')}², the largest train.patch_size")


def parse_size(text: str, limit: tuple[int, str] = INFER_MAX_PIXELS) -> tuple[int, int]:
    """'256' → (256, 256); '3840x2160' → (height 2160, width 3840); at most `limit`'s pixels (its reason named).

    A frame's limit by default, as the scripts in benchmarks/ time frames too.
    """
    try:
        parts = [int(part) for part in text.lower().split("x")]
    except ValueError:
        parts = []
    shown = shown_value(repr(text))
    if len(parts) not in (1, 2) or min(parts) < 16:
        raise ParamsError(f"--size = {shown}: give a side (256) or WIDTHxHEIGHT (3840x2160), each at least 16")
    width, height = (parts * 2)[:2]
    max_pixels, why = limit
    if width * height > max_pixels:
        raise ParamsError(f"--size = {shown}: {width}x{height} = {width * height:,} pixels, over the limit of "
                          f"{max_pixels:,} ({why}); choose a smaller size")
    return height, width


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model_for_bench(name: str, channels: int | None, depth: int | None, device: torch.device) -> tuple[nn.Module, ModelSpec]:
    """The architecture with seeded weights on `device`, in the memory layout training and serving use."""
    spec = model_spec(name, channels, depth)
    model = build_model(spec, seed=0).to(device)
    return model.to(memory_format=input_format(model, device)), spec


def _describe(spec: ModelSpec, model: nn.Module, height: int, width: int) -> dict:
    """Name, size, parameters and MACs of the benchmarked model."""
    return {"model": spec.name, "channels": spec.channels, "depth": spec.depth,
            "parameters": count_parameters(model), "gmac_per_image": count_macs(model, height, width) / 1e9}


def _training_step(model: nn.Module, cfg: TrainParams, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """One step as the training loop takes it (forward under autocast, loss with deep supervision,
    backward, clip, AdamW), without scheduler or EMA; returns the loss, still on the device."""
    net = wrap_for_training(model, cfg, World(), device)
    loss_fn = weighted_loss(cfg.loss)
    optimizer = make_optimizer(model, cfg)
    memory_format = input_format(model, device)
    net.train()

    def step(moire: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        with autocast(device, cfg.amp):
            outputs = net(in_layout(moire, memory_format))
        loss = multiscale_loss([out.float() for out in outputs], clean, loss_fn, cfg.multiscale_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
        optimizer.step()
        return loss.detach()

    return step


def bench_train(name: str, device_name: str, size: str = "256", batch: int | None = None, steps: int = 3,
                repeats: int = 3, channels: int | None = None, depth: int | None = None, amp: str = "auto",
                compile_model: bool = False) -> dict:
    """Training images per second: forward, loss (with deep supervision), backward, clip, AdamW step.

    Inputs are tensors already on the device, so data loading is excluded. TFLOP/s counts the
    backward pass as twice the forward's MACs (the usual estimate for convolutions).
    """
    device = resolve_device(device_name)
    height, width = parse_size(size, TRAIN_MAX_PIXELS)
    batch = batch or (64 if device.type == "cuda" else 8)
    model, spec = _model_for_bench(name, channels, depth, device)
    cfg = TrainParams(model=name, amp=amp, compile=compile_model, batch_size=batch)
    train_step = _training_step(model, cfg, device)
    generator = torch.Generator().manual_seed(0)
    moire = torch.rand(batch, 3, height, width, generator=generator).to(device)  # laid out by each step, as in training
    clean = torch.rand(batch, 3, height, width, generator=generator).to(device)

    for _ in range(3 if compile_model else 1):  # warm-up: allocator, cuDNN autotuning, compilation
        train_step(moire, clean)
    rates = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            train_step(moire, clean)
        _synchronize(device)
        rates.append(batch * steps / (time.perf_counter() - start))
    info = _describe(spec, model, height, width)
    images_per_s = statistics.median(rates)
    return {**info, "size": f"{width}x{height}", "device": str(device), "batch": batch, "amp": effective_amp(device, amp),
            "compile": effective_compile(device, compile_model), "threads": torch.get_num_threads(),
            "images_per_s": images_per_s,
            "achieved_tflops": 3 * 2 * info["gmac_per_image"] * 1e9 * images_per_s / 1e12,
            "runs": rates, "machine": machine()}


def bench_train_on_the_fly(profile: str, device_name: str, seconds: float, patch_size: int | None = None,
                           batch: int | None = None, channels: int | None = None, depth: int | None = None,
                           compile_model: bool | None = None, save: Path | None = None) -> dict:
    """A profile's on-the-fly training for about `seconds`: pairs rendered on the device, then a step.

    Each step renders a fresh batch with the batched simulator (train.synthetic_pairs_per_epoch's
    path) and trains on it as the loop does, EMA included when the profile sets it; the figure
    is images per second after the first step, which pays for compilation and autotuning.
    Validation, checkpoints and the learning-rate schedule are left out. `save` writes the model.
    """
    device = resolve_device(device_name)
    overrides = {"patch_size": patch_size, "batch_size": batch, "channels": channels, "depth": depth,
                 "compile": compile_model}
    params = parse_params({"profile": profile, "train": {k: v for k, v in overrides.items() if v is not None}})
    cfg = params.train
    pairs_per_epoch = cfg.synthetic_pairs_per_epoch or cfg.batch_size * 64
    batches = SyntheticBatches(params.synthesize, pairs_per_epoch, cfg.patch_size, cfg.batch_size, params.seed, device)
    spec = model_spec(cfg.model, cfg.channels, cfg.depth, cfg.correction, cfg.correction_width)
    model = build_model(spec, seed=params.seed).to(device)
    model.to(memory_format=input_format(model, device))
    train_step = _training_step(model, cfg, device)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay)) if cfg.ema_decay > 0 else None
    losses: list[float] = []
    start = time.perf_counter()
    first_step_s = 0.0
    for moire, clean in itertools.chain.from_iterable(batches.epoch(epoch) for epoch in itertools.count(1)):
        losses.append(float(train_step(moire, clean)))  # .item() waits for the step, as the loop's does
        if ema is not None:
            ema.update_parameters(model)
        if len(losses) == 1:
            first_step_s = time.perf_counter() - start
        if time.perf_counter() - start >= seconds:
            break
    elapsed = time.perf_counter() - start
    if save is not None:
        save_model(model.cpu(), spec, save)
    window = max(1, len(losses) // 10)
    timed_images = (len(losses) - 1) * cfg.batch_size
    return {"profile": profile, "model": spec.name, "channels": spec.channels, "depth": spec.depth,
            "parameters": count_parameters(model), "patch_size": cfg.patch_size, "batch": cfg.batch_size,
            "device": str(device), "amp": effective_amp(device, cfg.amp),
            "compile": effective_compile(device, cfg.compile),
            "ema": cfg.ema_decay > 0, "steps": len(losses), "images": len(losses) * cfg.batch_size,
            "seconds": elapsed, "first_step_s": first_step_s,
            "images_per_s": timed_images / (elapsed - first_step_s) if timed_images else None,
            "loss_first": statistics.fmean(losses[:window]), "loss_last": statistics.fmean(losses[-window:]),
            "threads": torch.get_num_threads(), "machine": machine()}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_infer(name: str, device_name: str, size: str = "3840x2160", repeats: int = 3,
                channels: int | None = None, depth: int | None = None, amp: str = "auto",
                tile_size: int = 0, overlap: int = 0, tile_batch: int = 1) -> dict:
    """Seconds per whole frame and peak memory: untiled (batch 1) when `tile_size` is 0, else tiled.

    The tiled path is `demoire predict`'s: a uint8 frame in, tiles blended, a uint8 frame out.
    Peak memory is the CUDA allocator's peak on a GPU, and the process's peak RSS on a CPU
    (so it includes the interpreter and torch, about 0.4 GB).
    """
    from pipeline.inference import check_tiling, restore_tiled, spatial_multiple, tile_spans

    device = resolve_device(device_name)
    height, width = parse_size(size)
    model, spec = _model_for_bench(name, channels, depth, device)
    if tile_size:
        check_tiling(tile_size, overlap, tile_batch, spatial_multiple(model))
    model.eval()
    generator = torch.Generator().manual_seed(0)
    if tile_size:
        image = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).numpy()
    else:
        frame = in_layout(torch.rand(1, 3, height, width, generator=generator).to(device), input_format(model, device))

    @torch.inference_mode()
    def run() -> None:
        with autocast(device, amp):
            if tile_size:
                restore_tiled(model, image, device, tile_size, overlap, tile_batch)
            else:
                model(frame).float().clamp_(0, 1)
        _synchronize(device)

    run()  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb()
    tiles = (len(tile_spans(height, tile_size, overlap, spatial_multiple(model)))
             * len(tile_spans(width, tile_size, overlap, spatial_multiple(model))) if tile_size else 1)
    return {**_describe(spec, model, height, width), "size": f"{width}x{height}", "device": str(device),
            "amp": effective_amp(device, amp), "threads": torch.get_num_threads(),
            "tile_size": tile_size, "tile_overlap": overlap if tile_size else 0, "tile_batch": tile_batch, "tiles": tiles,
            "ms_per_frame": statistics.median(times), "peak_memory_mb": peak, "runs_ms": times, "machine": machine()}
