"""What undoing the estimated screen falloff (pipeline.falloff, `infer.falloff`) gains where there is one, and costs
where there is none.

Gain: on paired folders (`moire/` + `clean/`; the truth is a digital original, with no falloff), the untouched
photo against the photo with a share of its estimated field undone, raw and tone-aligned PSNR (the per-channel
gain + offset fit of pipeline.evaluation.tone), mean over each --group; no model, so this is the falloff's own part
of what `demoire evaluate --falloff` adds to a model's figures.

Cost: on images without any falloff — folders of clean images (--clean) and/or the project's own synthesis
sources (--sources: the bundled photos and procedural screens `synthesize` draws, at display resolution) —
whatever the estimator finds is content taken for light. Each image is compared with itself after the share is
undone (PSNR), and that error is priced against a photo whose own tone-aligned error is --input-psnr dB (25: the
real pairs' median), assuming the two add: −10·log10(1 + 10^((input − psnr) / 10)). Mean and worst over the set.

    python benchmarks/falloff_check.py --paired ../shared/real-moire/paired --group fhdmi='fhdmi_*' \\
        --group tip2018='tip2018_*' --clean ../shared/real-moire/paired/clean --sources --strength 0.25 0.5 0.75 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._args import groups_or_all, name_glob, output_file, run  # noqa: E402
from pipeline.data.dataset import to_tensor  # noqa: E402
from pipeline.data.paired_folder import find_paired_folder  # noqa: E402
from pipeline.evaluation.tone import align_tone  # noqa: E402
from pipeline.falloff import FalloffField, estimate_falloff, undo_falloff  # noqa: E402
from pipeline.errors import DemoireError  # noqa: E402
from pipeline.io import read_rgb, write_json  # noqa: E402


def share_key(strength: float) -> str:
    """A share's key in the JSON: 0.5 → "0.5", 1.0 → "1"."""
    return f"{strength:g}"


def psnr(image: np.ndarray, target: np.ndarray, tone_aligned: bool = False) -> float:
    """PSNR (dB) of uint8 `image` against `target`, after the per-channel tone fit when `tone_aligned`."""
    x, y = to_tensor(image).double(), to_tensor(target).double()
    if tone_aligned:
        x = align_tone(x, y)
    mse = float(((x - y) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def priced(self_psnr: float, input_psnr: float) -> float:
    """dB lost by a photo of tone-aligned PSNR `input_psnr` when an independent error of `self_psnr` is added."""
    return 0.0 if self_psnr == float("inf") else -10 * np.log10(1 + 10 ** ((input_psnr - self_psnr) / 10))


def pair_gains(moire: np.ndarray, clean: np.ndarray, strengths: list[float]) -> dict:
    """Raw and tone-aligned PSNR gains of undoing each strength of the photo's estimated field, and the field."""
    field = estimate_falloff(moire)
    base = psnr(moire, clean), psnr(moire, clean, tone_aligned=True)
    gains = {}
    for strength in strengths:
        undone = undo_falloff(moire, field, strength)
        gains[share_key(strength)] = [psnr(undone, clean) - base[0], psnr(undone, clean, tone_aligned=True) - base[1]]
    return {"field": vars(field), "gains": gains}


def image_costs(image: np.ndarray, strengths: list[float], input_psnr: float) -> dict:
    """What undoing each strength of the field found on a falloff-free image costs it (dB, priced as the docstring)."""
    field = estimate_falloff(image)
    costs = {share_key(s): priced(psnr(undo_falloff(image, field, s), image), input_psnr) for s in strengths}
    return {"field": vars(field), "costs": costs}


def source_images(seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """The default synthesis sources (bundled photos and procedural screens), as `synthesize` draws them."""
    from pipeline.config import SynthesizeParams
    from pipeline.sources import collect_sources, load_source

    sources = SynthesizeParams().sources
    specs, _ = collect_sources(sources.bundled, sources.procedural, [], sources.screen_kinds)
    return [(f"source_{index}", np.array(load_source(spec, seed))) for index, spec in enumerate(specs)]  # writable


def folder_images(folder: Path) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """Readable images of `folder` by name, and the names skipped."""
    images, skipped = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            images.append((path.name, read_rgb(path)))
        except DemoireError:
            skipped.append(path.name)
    return images, skipped


def summarise(values: list[list[float]] | list[float]) -> dict:
    """Mean and worst of each column."""
    array = np.asarray(values, dtype=float)
    return {"mean": array.mean(axis=0).tolist(), "worst": array.min(axis=0).tolist(), "count": len(array)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paired", type=Path,
                        help="a paired folder (moire/ + clean/): the gain where there is falloff")
    parser.add_argument("--group", type=name_glob, action="append", default=[], metavar="NAME=GLOB",
                        help="pairs of --paired whose names match GLOB, scored apart; repeatable [default: all]")
    parser.add_argument("--clean", type=Path, action="append", default=[],
                        help="a folder of images without falloff: the cost where there is none; repeatable")
    parser.add_argument("--sources", action="store_true", help="also price the project's own synthesis sources")
    parser.add_argument("--strength", type=float, nargs="+", default=[0.5], help="shares of the field undone")
    parser.add_argument("--input-psnr", type=float, default=25.0, help="the tone-aligned PSNR the cost is priced at")
    parser.add_argument("--out", type=output_file, help="write every figure as JSON")
    args = parser.parse_args()
    if not (args.paired or args.clean or args.sources):
        parser.error("give --paired, --clean or --sources")
    if any(not 0 <= s <= 1 for s in args.strength):
        parser.error(f"--strength {args.strength}: each must be within 0 … 1 (as infer.falloff)")
    groups = groups_or_all(args.group)
    result: dict = {"strengths": args.strength, "input_psnr": args.input_psnr, "gain": {}, "cost": {}}

    if args.paired:
        for name, glob in groups.items():
            try:
                found = find_paired_folder(args.paired, "generic", None, glob, None)
            except DemoireError as error:
                parser.error(f"--paired {args.paired}: {error}")
            rows = []
            for pair in found.pairs:
                try:
                    rows.append(pair_gains(read_rgb(pair.moire_path), read_rgb(pair.clean_path), args.strength))
                except DemoireError as error:
                    print(f"skipped pair {pair.name}: {error}", file=sys.stderr)
            if not rows:
                parser.error(f"--group {name}={glob}: no pair of {args.paired} matches")
            result["gain"][name] = {share_key(s): summarise([row["gains"][share_key(s)] for row in rows])
                                    for s in args.strength}
            result["gain"][name]["fields"] = [row["field"] for row in rows]
            for strength in args.strength:
                summary = result["gain"][name][share_key(strength)]
                print(f"gain  {name:>10} (n={summary['count']}) strength {strength:g}: raw {summary['mean'][0]:+.3f}"
                      f" / tone-aligned {summary['mean'][1]:+.3f} dB (worst {summary['worst'][0]:+.2f} / "
                      f"{summary['worst'][1]:+.2f})")
    sets = [(folder.name, *folder_images(folder)) for folder in args.clean]
    if args.sources:
        sets.append(("sources", source_images(), []))
    for name, images, skipped in sets:
        if skipped:
            print(f"skipped {len(skipped)} unreadable images of {name}: {', '.join(skipped[:5])}", file=sys.stderr)
        rows = [image_costs(image, args.strength, args.input_psnr) for _, image in images]
        if not rows:
            print(f"cost  {name}: no readable image", file=sys.stderr)
            continue
        untouched = sum(FalloffField(**row["field"]) == FalloffField() for row in rows)
        result["cost"][name] = {share_key(s): summarise([row["costs"][share_key(s)] for row in rows])
                                for s in args.strength}
        result["cost"][name]["no_field"] = untouched
        for strength in args.strength:
            summary = result["cost"][name][share_key(strength)]
            print(f"cost  {name:>10} (n={summary['count']}, {untouched} without a field) strength {strength:g}: "
                  f"mean {summary['mean']:+.3f} dB, worst {summary['worst']:+.2f} at {args.input_psnr:g} dB input")
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    run(main)
