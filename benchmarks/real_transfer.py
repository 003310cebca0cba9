"""Does a model trained only on our synthetic data help real photos? One row per simulator lever.

For each lever (a set of params on top of params.yaml and a profile) and each seed: synthesize the
profile's dataset, split it by source, train, then score the model on the synthetic test split and
on every real set (restored as the served model restores them, tiled), raw and tone-aligned. Prints
a markdown table of two-seed medians and writes every figure to a JSON file.

    python benchmarks/real_transfer.py --real ../shared/real-moire/paired --group fhdmi='fhdmi_*' \
        --group tip2018='tip2018_*' --profile quick --seeds 2024 7 --out reports/real_transfer.json

`--lever NAME` (repeatable) runs only the named rows; `--list` prints them; `--preset FILE` adds a row
for a preset file (e.g. one `demoire calibrate` fitted on one group, to check it on the others); `--set KEY=VALUE`
changes a param in every row (`--set train.loss=psnr`); `--keep DIR` keeps each trained model. Real photos are only
ever scored, never trained on. Runs take minutes per row and seed on a 2-core CPU (the profile's
training time); nothing is written under data/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._args import name_glob, output_file, run  # noqa: E402
from pipeline.config import Params, RealSet, deep_merge, parse_params  # noqa: E402
from pipeline.evaluation.real_sets import find_real_set  # noqa: E402
from pipeline.io import write_json  # noqa: E402

# The levers, in the order they were introduced: each row is a preset and the synthesize keys it
# sets on top. `classic` is the simulator before issue 13; `default` is where the levers led.
PHONE_OPTICS = {
    "display": {"pixel_pitch_mm": [0.18, 0.30], "black_level": [0.0, 0.004], "gamma": [2.1, 2.4]},
    "optics": {"distance_mm": [300, 800], "focal_length_mm": [4.2, 6.0], "blur_sigma": [0.3, 1.0], "supersample": 1},
    "sensor": {"pixel_pitch_um": [0.9, 1.5], "aperture": [0.7, 1.0], "output_pitch": [0.6, 1.15],
               "auto_exposure": True, "exposure_ev": [-0.4, 0.4]},
    "isp": {"black_point": [0.0, 0.004], "chroma_denoise": [0.5, 2.5], "jpeg_quality": [80, 97], "gamma": [2.1, 2.4]},
    "sources": {"procedural": 96, "screen_kinds": ["document", "code", "ui", "chart", "webpage", "scene"]},
}
LAYERED = deep_merge(PHONE_OPTICS, {"target_tone": "capture", "moire_model": "layer"})
LEVERS: dict[str, tuple[str, dict]] = {
    "baseline (classic)": ("classic", {}),
    "camera resolution + phone optics + metering": ("classic", PHONE_OPTICS),
    "+ capture-toned target": ("classic", deep_merge(PHONE_OPTICS, {"target_tone": "capture"})),
    "+ moiré as a layer": ("classic", LAYERED),
    "+ beat-directed captures": ("classic", deep_merge(LAYERED, {"optics": {"beat_period_px": [6, 120]}})),
    "+ output softness (default)": ("default", {}),
}
SUMMARY_KEYS = ("psnr_gain_over_identity", "tone_psnr_gain_over_identity", "ssim", "identity_ssim",
                "moire_removed_low", "moire_removed_mid", "moire_removed_high")


def lever_params(base: dict, profile: str, lever: tuple[str, dict], seed: int, overrides: dict | None = None) -> Params:
    """params.yaml's values, the profile, the lever's preset and synthesize keys, the seed, then `overrides`."""
    preset, synthesize = lever
    raw = {key: value for key, value in base.items() if key not in ("profile",)}
    raw["profile"] = profile
    raw["seed"] = seed
    kept = {k: v for k, v in raw.get("synthesize", {}).items() if k in ("n_pairs", "size", "workers")}
    raw["synthesize"] = deep_merge(kept | {"preset": preset}, synthesize)
    return parse_params(deep_merge(raw, overrides or {}), source="lever")


def slug(name: str) -> str:
    """A row's name as a folder name."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def nested(keys: list[str], value: object) -> dict:
    """{"a": {"b": value}} for keys ["a", "b"]."""
    return {keys[0]: nested(keys[1:], value) if len(keys) > 1 else value}


def run_lever(params: Params, real_sets: list[RealSet], work: Path) -> dict:
    """Synthesize, split, train and score one lever at one seed; return its figures."""
    from pipeline.data.dataset import load_pairs
    from pipeline.data.imported import import_dataset_pairs
    from pipeline.data.manifest import read_manifest, validate_pairs
    from pipeline.data.pairs_index import index_pairs
    from pipeline.data.synthetic import local_shard_runner, synthesize_dataset
    from pipeline.evaluation.evaluate import evaluate_pairs, summarize
    from pipeline.evaluation.real_sets import score_real_set, served_restorer
    from pipeline.inference import restore_tensor
    from pipeline.models import load_model
    from pipeline.training.stage import train_in_process

    # the training run's live telemetry goes to a store in the work folder, not the project's mlflow.db
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    started = time.perf_counter()
    data = work / "data"
    synthesize_dataset(params.synthesize, params.seed, data,
                       local_shard_runner(params.synthesize, params.seed, params.synthesize.workers))
    synthesized = time.perf_counter()
    # split as the preprocess stage splits it; synthetic pairs only, whatever preprocess.datasets lists
    index = index_pairs(params, validate_pairs(read_manifest(data / "manifest.parquet"), data),
                        import_dataset_pairs([], 0))
    index.write(work / "pairs.parquet")
    pairs = index.pairs
    train_in_process(params, data, work / "pairs.parquet", work / "model", work / "history.csv")
    trained = time.perf_counter()
    model, _ = load_model(work / "model")
    device = torch.device("cpu")
    test = pairs[pairs.split == "test"].sort_values("pair_id")
    with torch.inference_mode():
        synthetic = summarize(evaluate_pairs(lambda x: restore_tensor(model, x, device), load_pairs(test, data),
                                             list(test.moire_path)))
        restore = served_restorer(model, device, params.infer)
        real = {entry.name: score_real_set(restore, find_real_set(entry, ROOT, i)).summary
                for i, entry in enumerate(real_sets)}
    return {"synthesize_s": synthesized - started, "train_s": trained - synthesized,
            "synthetic": {k: synthetic[k] for k in SUMMARY_KEYS}, "real": {name: {k: s[k] for k in SUMMARY_KEYS}
                                                                           for name, s in real.items()}}


def median_row(runs: list[dict], real_names: list[str]) -> dict:
    """Per-metric medians over the seeds (the mean of the two middle values for an even count)."""
    def med(values: list[float]) -> float:
        return statistics.median(values)

    row = {"synthetic": {k: med([r["synthetic"][k] for r in runs]) for k in SUMMARY_KEYS}}
    for name in real_names:
        row[name] = {k: med([r["real"][name][k] for r in runs]) for k in SUMMARY_KEYS}
    return row


def markdown(rows: dict[str, dict], real_names: list[str]) -> str:
    """The ablation table: gains in dB (raw / tone-aligned) and SSIM change, medians over seeds."""
    head = "| lever | synthetic test raw / tone (dB) | " + " | ".join(
        f"{name} raw / tone (dB), ΔSSIM" for name in real_names) + " |"
    lines = [head, "|" + "---|" * (2 + len(real_names))]
    for lever, row in rows.items():
        cells = [f"{row['synthetic']['psnr_gain_over_identity']:+.2f} / {row['synthetic']['tone_psnr_gain_over_identity']:+.2f}"]
        for name in real_names:
            r = row[name]
            cells.append(f"{r['psnr_gain_over_identity']:+.2f} / {r['tone_psnr_gain_over_identity']:+.2f}, "
                         f"{r['ssim'] - r['identity_ssim']:+.3f}")
        lines.append(f"| {lever} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Run the chosen levers at every seed and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, help="paired folder of real photos (any importer layout)")
    parser.add_argument("--group", type=name_glob, action="append", default=[],
                        help="NAME=GLOB: a real set of the folder's pairs")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2024, 7])
    parser.add_argument("--lever", action="append", help="only these rows (repeatable); default: all")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--out", type=output_file, default=ROOT / "reports" / "real_transfer.json",
                        help="JSON of every figure, rewritten after each seed (a killed run keeps what finished)")
    parser.add_argument("--preset", type=Path, action="append", default=[],
                        help="also a row for this preset file (e.g. one `demoire calibrate` wrote); repeatable")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a param for every row, as `dvc exp run -S` takes it (e.g. train.loss=l1); repeatable")
    parser.add_argument("--keep", type=Path, help="copy each trained model folder to KEEP/<row>-<seed> (for galleries)")
    parser.add_argument("--list", action="store_true", help="print the levers and exit")
    args = parser.parse_args()
    for preset in args.preset:
        LEVERS[f"preset {preset.name}"] = (str(preset.resolve()), {})
    if args.list:
        print("\n".join(LEVERS))
        return
    if args.real is None:
        parser.error("--real is required")
    for path, option in [(args.params, "--params"), *((preset, "--preset") for preset in args.preset)]:
        if not path.is_file():
            parser.error(f"{option} {path}: file not found")
    unknown = [lever for lever in args.lever or [] if lever not in LEVERS]
    if unknown:
        parser.error(f"--lever {unknown[0]!r}: not a lever; `--list` names them")
    groups = args.group or [(args.real.name, "*")]
    real_sets = [RealSet(name=name, path=args.real.resolve(), include=glob) for name, glob in groups]
    for index, entry in enumerate(real_sets):  # every set found before the first minute of training
        find_real_set(entry, ROOT, index)
    base = yaml.safe_load(args.params.read_text()) or {}
    overrides: dict = {}
    for assignment in args.set:
        key, _, value = assignment.partition("=")
        overrides = deep_merge(overrides, nested(key.split("."), yaml.safe_load(value)))
    chosen = (args.lever or []) + [f"preset {preset.name}" for preset in args.preset] or list(LEVERS)
    for lever in chosen:  # every row's params valid before the first is trained
        for seed in args.seeds:
            lever_params(base, args.profile, LEVERS[lever], seed, overrides)
    names = [name for name, _ in groups]
    results: dict[str, list[dict]] = {}
    for lever in chosen:
        results[lever] = []
        for seed in args.seeds:
            params = lever_params(base, args.profile, LEVERS[lever], seed, overrides)
            with tempfile.TemporaryDirectory(prefix="lever-") as work:
                figures = run_lever(params, real_sets, Path(work))
                if args.keep:
                    shutil.copytree(Path(work) / "model", args.keep / f"{slug(lever)}-{seed}", dirs_exist_ok=True)
            figures["seed"] = seed
            results[lever].append(figures)
            print(f"{lever} (seed {seed}): " + json.dumps(figures), flush=True)
            rows = {lever: median_row(runs, names) for lever, runs in results.items()}
            write_json(args.out, {"profile": args.profile, "seeds": args.seeds, "set": args.set, "levers": LEVERS,
                                  "runs": results, "medians": rows})
    print(markdown(rows, names))


if __name__ == "__main__":
    run(main)
