"""4K CPU time of the default model under onnxruntime against PyTorch, tiled as `demoire predict` tiles.

    python benchmarks/onnx_vs_torch.py [--model data/train] [--repeats 3] [--size 3840x2160]

Without --model the default architecture is built with random weights (the time does not depend on them).
Prints one JSON object: the median seconds per frame of each runtime, every run, and the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.bench import machine, parse_size
from pipeline.config import InferParams
from pipeline.export import ExportedModel, export_model
from pipeline.inference import restore_image, spatial_multiple
from pipeline.models import build_model, load_model, model_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model folder [default: the default unet, random weights]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="3840x2160")
    args = parser.parse_args()
    if args.model:
        net, spec = load_model(args.model)
    else:
        spec = model_spec("unet")
        net = build_model(spec, seed=0).eval()
    height, width = parse_size(args.size)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    tiling = InferParams()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        difference = export_model(net, spec, "onnx", path, spatial_multiple(net))
        runtimes = {"pytorch": net, "onnxruntime": ExportedModel(path)}
        results, outputs = {}, {}
        for name, model in runtimes.items():
            restore = lambda: restore_image(model, image, "cpu", tiling.tile_size, tiling.tile_overlap, tiling.tile_batch)
            outputs[name] = restore()  # warm-up
            runs = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                restore()
                runs.append(time.perf_counter() - start)
            results[name] = {"median_s": statistics.median(runs), "runs_s": runs}
    levels = np.abs(outputs["pytorch"].astype(int) - outputs["onnxruntime"]).max()
    print(json.dumps({"size": f"{width}x{height}", "model": f"{spec.name} {spec.channels} ch depth {spec.depth}",
                      "tile_size": tiling.tile_size, "tile_overlap": tiling.tile_overlap, "repeats": args.repeats,
                      "export_check_max_abs_difference": difference, "max_uint8_levels_apart": int(levels),
                      "torch_threads": torch.get_num_threads(), **results,
                      "speedup": results["pytorch"]["median_s"] / results["onnxruntime"]["median_s"],
                      "machine": machine()}))


if __name__ == "__main__":
    main()
