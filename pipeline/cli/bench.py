"""`demoire bench synth|train|infer|fly`: throughput benchmarks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Literal

import typer

from pipeline.cli.common import Architecture, Device, app, fail, infer_params
from pipeline.io import json_text
from pipeline.errors import DemoireError
from pipeline.lifetime import unwinds_on_sigterm


bench_app = typer.Typer(help="Throughput benchmarks; medians of several runs, with the machine.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _machine(result: dict) -> str:
    """The machine a benchmark ran on, as its line says it."""
    from pipeline.bench import machine_text

    return machine_text(result["machine"])


# The model's own checks name the params keys; here the user gave these options instead.
MODEL_OPTIONS = {"train.depth": "--depth", "train.channels": "--channels"}


def _report_bench(run: Callable[[], dict], as_json: bool, line: Callable[[dict], str]) -> None:
    """Run a benchmark; print its result as one JSON object or one line; user errors exit 2, naming options."""
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # what else ran, not the run itself
    try:
        result = run()
    except DemoireError as exc:
        key = next((key for key in MODEL_OPTIONS if str(exc).startswith(f"{key} = ")), None)
        fail(type(exc)(MODEL_OPTIONS[key] + str(exc)[len(key):]) if key else exc)
    result["machine"]["load_1min"] = None if load_before is None else round(load_before, 2)
    typer.echo(json_text(result) if as_json else line(result))


@bench_app.command("synth")
def bench_synth(
    size: int = typer.Option(512, min=32, help="side of each pair, pixels"),
    pairs: int = typer.Option(8, min=1, help="pairs per run (CPU)"),
    repeats: int = typer.Option(5, min=1, help="runs; the median is reported"),
    device: Literal["cpu", "cuda"] = typer.Option("cpu", help="cpu: one process on one core, end to end; cuda: the batched simulator"),
    batch: int = typer.Option(32, min=1, help="captures per batch (cuda, or --batched)"),
    batched: bool = typer.Option(False, "--batched", help="the batched simulator on the CPU too (as cuda always runs)"),
    preset: str = typer.Option("default", help="default | fine | coarse | document | classic, or a preset file (.yaml)"),
    layer_bank: int = typer.Option(None, "--layer-bank", min=1,
                                   help="synthesize.moire_layer_bank: reuse N moiré layers (rendered first, timed apart) "
                                        "[default: none, each pair its own]"),
    encode: bool = typer.Option(False, "--encode", help="encode both images as the stage's PNGs too (CPU, in memory)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Synthetic pairs per second at --size (goal on CPU: 50 pairs/s per core at 512²)."""
    from pipeline.bench import bench_synth_batched, bench_synth_cpu
    from pipeline.training.device import resolve_device

    def line(result: dict) -> str:
        rate = result.get("pairs_per_s_per_core", result.get("pairs_per_s"))
        unit = f"pairs/s (batch {batch})" if "pairs_per_s" in result else "pairs/s per core"
        bank = f", a bank of {layer_bank} layers rendered first in {result['layer_bank_s']:.1f} s" if layer_bank else ""
        png = ", PNGs encoded" if result.get("png_encoding") else ""
        return f"{size}² on {device}: {rate:.2f} {unit} (median of {repeats}{bank}{png}); {_machine(result)}"

    if device == "cpu" and not batched:
        _report_bench(lambda: bench_synth_cpu(size, pairs, repeats, preset, layer_bank=layer_bank, encode=encode),
                      as_json, line)
    else:
        _report_bench(lambda: bench_synth_batched(size, batch, repeats, str(resolve_device(device)), preset,
                                                  layer_bank=layer_bank),
                      as_json, line)


def _model_bench_options(result: dict) -> str:
    """The model and machine a model benchmark ran on, for the human-readable line."""
    return (f"{result['model']} ({result['channels']} ch, depth {result['depth']}, {result['parameters']:,} params, "
            f"{result['gmac_per_image']:.1f} GMAC/image) on {result['device']}; {_machine(result)}")


@bench_app.command("train")
def bench_train(
    model: Architecture = typer.Option("unet", help="architecture"),
    device: Device = typer.Option("auto", help="where the model runs"),
    size: str = typer.Option("256", help="patch side, or WIDTHxHEIGHT"),
    batch: int = typer.Option(None, min=1, help="images per step [default: 64 on CUDA, 8 on CPU]"),
    steps: int = typer.Option(3, min=1, help="steps per run"),
    repeats: int = typer.Option(3, min=1, help="runs; the median is reported"),
    channels: int = typer.Option(None, min=1, help="width [default: the architecture's]"),
    depth: int = typer.Option(None, min=1, help="depth [default: the architecture's]"),
    amp: Literal["auto", "bf16", "off"] = typer.Option("auto", help="auto: bf16 on CUDA"),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model first (CUDA only)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (images_per_s, achieved_tflops, …)"),
) -> None:
    """Training throughput in images/s (goal for mscale on one H100: 1500 images/s at 256²)."""
    from pipeline.bench import bench_train as run_bench

    _report_bench(
        lambda: run_bench(model, device, size, batch, steps, repeats, channels, depth, amp, compile_model), as_json,
        lambda result: (f"train {result['size']}, batch {result['batch']}: {result['images_per_s']:.1f} images/s, "
                        f"{result['achieved_tflops']:.2f} TFLOP/s (median of {repeats}); {_model_bench_options(result)}"))


@bench_app.command("infer")
def bench_infer(
    model: Architecture = typer.Option("unet", help="architecture"),
    device: Device = typer.Option("auto", help="where the model runs"),
    size: str = typer.Option("3840x2160", help="frame WIDTHxHEIGHT, or a side"),
    repeats: int = typer.Option(3, min=1, help="runs; the median is reported"),
    channels: int = typer.Option(None, min=1, help="width [default: the architecture's]"),
    depth: int = typer.Option(None, min=1, help="depth [default: the architecture's]"),
    amp: Literal["auto", "bf16", "off"] = typer.Option("auto", help="auto: bf16 on CUDA"),
    tile: int | None = typer.Option(None, help="tile side, 0 for the whole frame at once [default: infer.tile_size]"),
    overlap: int | None = typer.Option(None, help="pixels shared by neighbouring tiles [default: infer.tile_overlap]"),
    tile_batch: int | None = typer.Option(None, min=1, help="tiles per forward pass [default: infer.tile_batch]"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (ms_per_frame, peak_memory_mb, …)"),
) -> None:
    """Latency of one whole frame, tiled as `predict` does (goal for the default model on one H100: 40 ms at 4K)."""
    from pipeline.bench import bench_infer as run_bench

    def run() -> dict:
        if tile == 0:
            return run_bench(model, device, size, repeats, channels, depth, amp)
        cfg = infer_params(None, tile_size=tile, tile_overlap=overlap, tile_batch=tile_batch)
        return run_bench(model, device, size, repeats, channels, depth, amp, cfg.tile_size, cfg.tile_overlap, cfg.tile_batch)

    def line(result: dict) -> str:
        tiling = (f"{result['tiles']} tiles of {result['tile_size']} (overlap {result['tile_overlap']})"
                  if result["tile_size"] else "untiled")
        return (f"infer {result['size']}, {tiling}: {result['ms_per_frame']:.1f} ms/frame, peak "
                f"{result['peak_memory_mb']:.0f} MiB (median of {repeats}); {_model_bench_options(result)}")

    _report_bench(run, as_json, line)


def _rate_after_first(result: dict) -> str:
    """Images/s after the first step, or why there is none (one step only: compile and warm-up)."""
    rate = result["images_per_s"]
    return "no rate (one step only)" if rate is None else f"{rate:.1f} images/s"


@bench_app.command("fly")
@unwinds_on_sigterm
def bench_fly(
    profile: str = typer.Option("gpu", help="the recipe (pipeline/profiles.py): model, patch, batch, loss, amp, compile"),
    device: Device = typer.Option("auto", help="where pairs are rendered and the model trains"),
    seconds: float = typer.Option(120.0, min=0.0, help="train for about this long (the first step included)"),
    patch: int = typer.Option(None, min=8, help="patch side [default: the profile's train.patch_size]"),
    batch: int = typer.Option(None, min=1, help="images per step [default: the profile's train.batch_size]"),
    channels: int = typer.Option(None, min=1, help="width [default: the architecture's]"),
    depth: int = typer.Option(None, min=1, help="depth [default: the architecture's]"),
    compile_model: bool = typer.Option(None, "--compile/--no-compile",
                                       help="torch.compile on CUDA [default: the profile's; never on the CPU]"),
    save: Path = typer.Option(None, help="write the trained model to this folder (for `demoire predict --model`) [default: not saved]"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (images_per_s, first_step_s, losses, …)"),
) -> None:
    """Training on pairs rendered on the fly for --seconds, with a profile's recipe, in images/s."""
    from pipeline.bench import bench_train_on_the_fly
    from pipeline.errors import InputDataError
    from pipeline.io import check_output_dir
    from pipeline.models import SPEC_FILE, WEIGHTS_FILE

    if save is not None:  # found now, not after the training
        try:
            check_output_dir(save, "--save")
            if (save / SPEC_FILE).exists():
                raise InputDataError(f"--save {save} holds a model already; choose another folder or remove it")
            if (save / WEIGHTS_FILE).exists():  # save_model writes the spec last: a save cut short left this
                raise InputDataError(f"--save {save} holds {WEIGHTS_FILE} without {SPEC_FILE} (a save cut short?); "
                                     f"remove {save / WEIGHTS_FILE} or choose another folder")
        except DemoireError as exc:
            fail(exc)

    _report_bench(
        lambda: bench_train_on_the_fly(profile, device, seconds, patch, batch, channels, depth, compile_model, save),
        as_json,
        lambda result: (f"on-the-fly training ({result['profile']}), {result['patch_size']}², batch {result['batch']}: "
                        f"{result['steps']} steps in {result['seconds']:.1f} s (first {result['first_step_s']:.1f} s), "
                        f"{_rate_after_first(result)} after it; loss {result['loss_first']:.4f} → "
                        f"{result['loss_last']:.4f}; {result['model']} ({result['parameters']:,} params) on {result['device']}, "
                        f"amp {result['amp']}, compile {result['compile']}; {_machine(result)}"))
