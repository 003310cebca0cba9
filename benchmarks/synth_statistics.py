"""Statistics of a rendered synthetic set, to check that a speed-up of the simulator leaves the data alone.

    python benchmarks/synth_statistics.py --out /tmp/before.json [--size 512] [--pairs 48] [--seed 2024]
    python benchmarks/synth_statistics.py --out /tmp/after.json --against /tmp/before.json

Renders `--pairs` pairs of the preset with the synthesize stage's own code (`--keep DIR` keeps them),
then measures what `demoire synth-report` measures (input PSNR / SSIM, the residual's radial power
spectrum, here summed into bands) and the tone of both images (mean level and contrast). With
`--against` it prints each statistic's change from that earlier run and exits 1 when one moves
beyond its tolerance (TOLERANCES); with `--images-of DIR` it also counts how many bytes differ
from an earlier `--keep` folder and by how much.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._args import output_file, run  # noqa: E402
from pipeline.config import parse_params  # noqa: E402
from pipeline.data.manifest import read_pair  # noqa: E402
from pipeline.data.synthetic import local_shard_runner, synthesize_dataset  # noqa: E402
from pipeline.evaluation.synth_report import compare_paired_sets  # noqa: E402
from pipeline.io import read_rgb, write_json  # noqa: E402

# Residual spectrum bands, cycles per pixel: slow tone, wide bands, mid bands, fine bands, grid residue.
BANDS = ((0.0, 0.02), (0.02, 0.05), (0.05, 0.15), (0.15, 0.3), (0.3, 0.5))
# "Does not move": absolute change allowed for the metrics, relative change for powers and contrasts.
TOLERANCES = {"input_psnr_mean": ("abs", 0.1), "input_psnr_std": ("abs", 0.1), "input_ssim_mean": ("abs", 0.005),
              "moire_mean": ("abs", 0.5), "clean_mean": ("abs", 0.5), "moire_std": ("rel", 0.02),
              "clean_std": ("rel", 0.02), "residual_rms": ("rel", 0.02), "band_power": ("rel", 0.03)}


def band_powers(frequency: list[float], power: list[float]) -> list[float]:
    """Mean residual power in each of BANDS."""
    f, p = np.asarray(frequency), np.asarray(power)
    return [float(p[(f >= low) & (f < high)].mean()) for low, high in BANDS]


def tone_statistics(folder: Path) -> dict[str, float]:
    """Mean level and contrast (std, 0–255) of the moiré and clean images, and the residual's RMS, over all pairs."""
    moire_mean, clean_mean, moire_std, clean_std, residual = [], [], [], [], []
    for path in sorted((folder / "moire").glob("*.png")):
        moire, clean = (image.astype(np.float64) for image in read_pair(path, folder / "clean" / path.name))
        moire_mean.append(moire.mean())
        clean_mean.append(clean.mean())
        moire_std.append(moire.std())
        clean_std.append(clean.std())
        residual.append(np.sqrt(((moire - clean) ** 2).mean()))
    return {"moire_mean": float(np.mean(moire_mean)), "clean_mean": float(np.mean(clean_mean)),
            "moire_std": float(np.mean(moire_std)), "clean_std": float(np.mean(clean_std)),
            "residual_rms": float(np.mean(residual))}


def byte_differences(folder: Path, earlier: Path) -> dict[str, float]:
    """Share of bytes that differ from an earlier render of the same pairs, and the largest difference (levels)."""
    differing, total, largest = 0, 0, 0
    for path in sorted((folder / "moire").glob("*.png")):
        for kind in ("moire", "clean"):
            now, before = (read_rgb(root / kind / path.name).astype(np.int16) for root in (folder, earlier))
            delta = np.abs(now - before)
            differing, total = differing + int((delta > 0).sum()), total + delta.size
            largest = max(largest, int(delta.max()))
    return {"bytes_differing": differing / total, "largest_difference": largest}


def measure(args: argparse.Namespace, folder: Path) -> dict:
    """Render the set into `folder` and measure it."""
    cfg = parse_params({"synthesize": {"size": args.size, "n_pairs": args.pairs, "preset": args.preset,
                                       "workers": args.workers, "moire_layer_bank": args.layer_bank}}).synthesize
    synthesize_dataset(cfg, args.seed, folder, local_shard_runner(cfg, args.seed, args.workers))
    report = compare_paired_sets([("synthetic", folder)], folder.parent / f"{folder.name}-report")["sets"][0]
    stats = {"input_psnr_mean": report["input_psnr_mean"], "input_psnr_std": report["input_psnr_std"],
             "input_ssim_mean": report["input_ssim_mean"], **tone_statistics(folder),
             "band_power": band_powers(report["spectrum"]["frequency"], report["spectrum"]["power"])}
    return {"size": args.size, "pairs": args.pairs, "seed": args.seed, "preset": args.preset,
            "layer_bank": args.layer_bank, "bands": BANDS,
            "statistics": stats}


def changes(now: dict, before: dict) -> tuple[dict, bool]:
    """Each statistic's change (absolute or relative, per TOLERANCES) and whether all stay within tolerance."""
    moved, within = {}, True
    for name, (kind, limit) in TOLERANCES.items():
        new, old = np.atleast_1d(now[name]), np.atleast_1d(before[name])
        delta = new - old if kind == "abs" else new / old - 1.0
        moved[name] = [round(float(d), 5) for d in delta] if len(delta) > 1 else round(float(delta[0]), 5)
        within &= bool(np.all(np.abs(delta) <= limit))
    return moved, within


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=output_file, required=True, help="JSON file for the statistics")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--layer-bank", type=int, help="synthesize.moire_layer_bank (default: none)")
    parser.add_argument("--keep", type=Path, help="render into this (new) folder and keep it")
    parser.add_argument("--against", type=Path, help="statistics JSON of an earlier run to compare with")
    parser.add_argument("--images-of", type=Path, help="an earlier --keep folder to compare bytes with")
    args = parser.parse_args()
    earlier = None
    if args.against:  # read before minutes of rendering
        try:
            earlier = json.loads(args.against.read_text())["statistics"]
        except (OSError, ValueError, KeyError) as exc:
            parser.error(f"--against {args.against}: not a statistics file of this script ({type(exc).__name__})")
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch) / "pairs"
        result = measure(args, folder)
        if args.images_of:
            result["bytes"] = byte_differences(folder, args.images_of)
    within = True
    if earlier is not None:
        result["change"], within = changes(result["statistics"], earlier)
        result["within_tolerance"] = within
    write_json(args.out, result)
    print(json.dumps(result))
    sys.exit(0 if within else 1)


if __name__ == "__main__":
    run(main)
