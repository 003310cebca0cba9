"""How much of a known moiré band a model removes from real content, by the band's period.

A real pair's error mixes its moiré with misalignment, blur and tone, so what a model gains on it says
little about why. Here the moiré is ours and the content real: each clean photo of a folder (the clean
halves of real pairs, or any photos) gets a band pattern laid over its light, and the served model
restores both the photo with the bands and the photo alone. The share of the bands removed is

    1 − ‖restore(banded) − restore(clean)‖² / ‖banded − clean‖²

(restore(clean) in place of clean, so what the model changes in the content itself does not count): 1 is
all of the bands, 0 none, below 0 the model adds to them. The bands are straight sinusoids in linear light
(the photo decoded with a 2.2 power, multiplied, encoded again), as a screen's moiré modulates its light,
of RMS contrast `--amplitude`, at `--angle` degrees, in two kinds:
- colour: red, green and blue a third of a cycle apart (the rainbow stripes of an LCD's subpixels beating
  against a colour mosaic): the mean of the three stays flat, though BT.601's luma still moves by 0.41 of a
  channel's swing (green weighs most);
- luma: the three channels alike (the grid's own beat, grey stripes).
Prints, per model, the median over the photos for each kind and period; `--out` writes every figure.

    python benchmarks/band_response.py --model data/train --clean ../shared/real-moire/paired/clean \
        --periods 8 16 32 64 128 [--model OTHER] [--amplitude 0.1] [--crop 512] [--out band_response.json]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._args import output_file, run  # noqa: E402
from pipeline.config import InferParams  # noqa: E402
from pipeline.data.dataset import to_image, to_tensor  # noqa: E402
from pipeline.errors import DemoireError, InputDataError  # noqa: E402
from pipeline.evaluation.real_sets import served_restorer  # noqa: E402
from pipeline.io import read_rgb, write_json  # noqa: E402
from pipeline.models import load_model  # noqa: E402
from pipeline.sources.folders import IMAGE_SUFFIXES, image_files  # noqa: E402

KINDS = ("colour", "luma")
PHASES = {"colour": (0.0, 2 * math.pi / 3, 4 * math.pi / 3), "luma": (0.0, 0.0, 0.0)}
DISPLAY_GAMMA = 2.2  # linear light for the modulation: a plain power, the photos' own curve is unknown
MAX_AMPLITUDE = 1 / math.sqrt(2)  # the bands' troughs reach zero light


def band_pattern(height: int, width: int, period: float, amplitude: float, kind: str, angle_deg: float = 30.0
                 ) -> torch.Tensor:
    """(3, H, W) a modulation of mean 1: sinusoidal bands of `period` px across `angle_deg`, RMS contrast
    `amplitude` per channel, the channels' phases as `kind` sets them."""
    angle = math.radians(angle_deg)
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    phase = 2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period
    peak = amplitude * math.sqrt(2)  # a sinusoid's RMS is its peak over √2
    return torch.stack([1 + peak * torch.sin(phase + shift) for shift in PHASES[kind]]).float()


def banded(clean: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """`clean` (3×H×W in [0, 1]) with `pattern` multiplied into its linear light, rounded to 8 bits as a photo is."""
    light = clean.pow(DISPLAY_GAMMA) * pattern
    return to_tensor(to_image(light.clamp(0, 1).pow(1 / DISPLAY_GAMMA)))


def removed_share(restore: Callable[[torch.Tensor], torch.Tensor], clean: torch.Tensor, pattern: torch.Tensor,
                  restored_clean: torch.Tensor | None = None) -> float:
    """Share of the bands' energy `restore` takes out of `clean` with `pattern` laid over it (see the module)."""
    with_bands = banded(clean, pattern)
    reference = restore(clean) if restored_clean is None else restored_clean
    bands = (with_bands - clean).double().square().sum()
    left = (restore(with_bands) - reference).double().square().sum()
    return float(1.0 - left / bands.clamp(min=1e-12))


def centre_crop(image: torch.Tensor, side: int | None) -> torch.Tensor:
    """The central side×side part of a 3×H×W image (the whole of a side shorter than that)."""
    if side is None:
        return image
    height, width = image.shape[-2:]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return image[:, top:top + side, left:left + side]


def photo_responses(restore: Callable[[torch.Tensor], torch.Tensor], clean: torch.Tensor, periods: list[float],
                    amplitude: float, angle_deg: float) -> dict[str, dict[float, float]]:
    """{kind: {period: removed share}} of one clean photo."""
    reference = restore(clean)
    height, width = clean.shape[-2:]
    return {kind: {period: removed_share(restore, clean, band_pattern(height, width, period, amplitude, kind,
                                                                      angle_deg), reference)
                   for period in periods}
            for kind in KINDS}


def clean_photos(folder: Path) -> list[Path]:
    """The images in `folder` and its subfolders, by path (as a source folder's are found)."""
    if not folder.is_dir():
        raise SystemExit(f"--clean {folder}: not a folder")
    photos = image_files(folder)
    if not photos:
        raise SystemExit(f"--clean {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return photos


def readable_crops(folder: Path, crop: int | None) -> dict[str, torch.Tensor]:
    """{path within `folder`: central crop} of every photo that reads; those that do not are skipped, counted and
    named."""
    crops, skipped = {}, []
    for photo in clean_photos(folder):
        name = photo.relative_to(folder).as_posix()
        try:
            crops[name] = centre_crop(to_tensor(read_rgb(photo)), crop)
        except InputDataError as error:
            skipped.append(f"{name} ({error})")
    if skipped:
        print(f"skipped {len(skipped)} unreadable photo(s): {'; '.join(skipped)}", file=sys.stderr)
    if not crops:
        raise SystemExit("no photo could be read")
    return crops


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One line naming the option, its value and what is allowed, for values the bands cannot take."""
    if any(period <= 0 for period in args.periods):
        parser.error(f"--periods {args.periods}: each must be > 0 pixels")
    if not 0 < args.amplitude <= MAX_AMPLITUDE:
        parser.error(f"--amplitude {args.amplitude}: must lie in (0, {MAX_AMPLITUDE:.3f}] (RMS contrast; above it "
                     f"the bands' troughs would need negative light)")
    if args.crop < 0:
        parser.error(f"--crop {args.crop}: must be ≥ 0 (0: whole photos)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", required=True, help="a model folder; repeatable")
    parser.add_argument("--clean", type=Path, required=True, help="a folder of clean photos")
    parser.add_argument("--periods", type=float, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--amplitude", type=float, default=0.1, help="the bands' RMS contrast in linear light")
    parser.add_argument("--angle", type=float, default=30.0, help="the bands' direction, degrees")
    parser.add_argument("--crop", type=int, default=512, help="score each photo's central CROP² (0: whole)")
    parser.add_argument("--out", type=output_file, default=None, help="write every figure as JSON")
    args = parser.parse_args()
    check_args(parser, args)
    crops = readable_crops(args.clean, args.crop or None)
    figures = {}
    for model_dir in args.model:
        try:
            model, _ = load_model(model_dir)
        except DemoireError as error:
            raise SystemExit(f"--model {model_dir}: {error}") from None
        restore = served_restorer(model, torch.device("cpu"), InferParams())
        per_photo = {name: photo_responses(restore, crop, args.periods, args.amplitude, args.angle)
                     for name, crop in crops.items()}
        figures[str(model_dir)] = per_photo
        print(f"{model_dir}: share of the bands removed, median of {len(crops)} photos "
              f"(RMS contrast {args.amplitude}, {args.angle}°)")
        print("| kind | " + " | ".join(f"{period:g} px" for period in args.periods) + " |")
        print("|---|" + "---|" * len(args.periods))
        for kind in KINDS:
            medians = [statistics.median(r[kind][period] for r in per_photo.values()) for period in args.periods]
            print(f"| {kind} | " + " | ".join(f"{m:+.2f}" for m in medians) + " |")
    if args.out:
        write_json(args.out, {"amplitude": args.amplitude, "angle": args.angle, "crop": args.crop,
                              "periods": args.periods, "models": figures})


if __name__ == "__main__":
    run(main)
