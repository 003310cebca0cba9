"""Before/after crops of real moiré photos at full resolution: what a model does to photos it never saw.

    python benchmarks/real_gallery.py --model data/train --out docs/gallery/real-uhdm.jpg \
        --max-side 2048 --max-side 1024 ../shared/real-moire/unpaired/uhdm_*_moire.jpg

For each photo, the crop (`--crop` pixels, at full resolution) where its colour moiré is strongest is
restored at full size with `--margin` pixels of context around it (so tile edges never fall in the crop) and
shown beside the input. One row per photo: input | full size. Written as JPEG (the photos are JPEGs already),
atomically; unreadable photos and photos smaller than the crop are skipped and named.
Each `--max-side N` adds a column: the whole photo restored as `demoire predict --max-side N` does (at a longer
side of N, the correction enlarged back), cut at the same crop. Printed per photo and column: the share of the
crop's energy left in colour and luma at band periods (16-128 px) and in luma at texture periods (2-8 px).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._args import jpeg_output, jpeg_quality, run  # noqa: E402
from pipeline.calibration.statistics import luma_and_chroma  # noqa: E402
from pipeline.data.dataset import to_tensor  # noqa: E402
from pipeline.errors import DemoireError, InputDataError  # noqa: E402
from pipeline.evaluation.residual_bands import band_energies  # noqa: E402
from pipeline.io import read_rgb  # noqa: E402

# Colour bands of 4K moiré have periods of 16–128 px; fine texture (leaves, grass) lives below 8 px.
BANDS = {"bands": (1 / 128, 1 / 16), "texture": (1 / 8, 0.5)}


def readable_photos(paths: list[Path], skipped: list[str]) -> Iterator[tuple[Path, np.ndarray]]:
    """Each of `paths` that decodes, with its RGB image; each that does not is added to `skipped` as "path (why)"."""
    for path in paths:
        try:
            image = read_rgb(path)
        except DemoireError as error:
            skipped.append(f"{path} ({error})")
            continue
        yield path, image


def strongest_moire_crop(image: np.ndarray, crop: int, stride: int | None = None) -> tuple[int, int]:
    """(top, left) of the crop where colour bands stand out most against fine luma texture.

    Chroma energy at band periods over luma energy at texture periods: high on flat areas (sky,
    walls, shirts) crossed by moiré, low on foliage whose own colour detail would mislead.
    """
    stride = stride or crop // 2
    height, width = image.shape[:2]
    best, where = -1.0, (0, 0)
    for top in range(0, max(height - crop, 0) + 1, stride):
        for left in range(0, max(width - crop, 0) + 1, stride):
            luma, chroma = luma_and_chroma(to_tensor(image[top : top + crop, left : left + crop]).double())
            score = band_energies(chroma, BANDS)["bands"] / (band_energies(luma, BANDS)["texture"] + 1e-6)
            if score > best:
                best, where = score, (top, left)
    return where


def restored_crop(model: torch.nn.Module, image: np.ndarray, top: int, left: int, crop: int, margin: int) -> np.ndarray:
    """The crop as restored with `margin` pixels of context on every side."""
    from pipeline.inference import restore_image

    height, width = image.shape[:2]
    y0, x0 = max(top - margin, 0), max(left - margin, 0)
    y1, x1 = min(top + crop + margin, height), min(left + crop + margin, width)
    restored = restore_image(model, image[y0:y1, x0:x1], torch.device("cpu"), tile_size=512, overlap=32)
    return restored[top - y0 : top - y0 + crop, left - x0 : left - x0 + crop]


def band_shares(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """What a restoration leaves of the crop's energy: colour and luma at band periods, luma at texture periods."""
    (luma_in, chroma_in), (luma_out, chroma_out) = (luma_and_chroma(to_tensor(x).double()) for x in (before, after))
    return {"colour bands": band_energies(chroma_out, BANDS)["bands"] / band_energies(chroma_in, BANDS)["bands"],
            "luma bands": band_energies(luma_out, BANDS)["bands"] / band_energies(luma_in, BANDS)["bands"],
            "luma texture": band_energies(luma_out, BANDS)["texture"] / band_energies(luma_in, BANDS)["texture"]}


def shrunk_crop(model: torch.nn.Module, image: np.ndarray, top: int, left: int, crop: int, max_side: int) -> np.ndarray:
    """The crop of the whole photo restored at a longer side of `max_side` (pipeline.inference.restore_shrunk)."""
    from pipeline.inference import restore_image

    restored = restore_image(model, image, torch.device("cpu"), tile_size=512, overlap=32, max_side=max_side)
    return restored[top : top + crop, left : left + crop]


def main() -> None:
    """Write the gallery."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path, nargs="+")
    parser.add_argument("--model", type=Path, default=ROOT / "data" / "train")
    parser.add_argument("--out", type=jpeg_output, required=True)
    parser.add_argument("--crop", type=int, default=384)
    parser.add_argument("--margin", type=int, default=64)
    parser.add_argument("--quality", type=jpeg_quality, default=88)
    parser.add_argument("--max-side", type=int, action="append", default=[], metavar="N",
                        help="add a column restored at this longer side (demoire predict --max-side); repeatable")
    args = parser.parse_args()
    if args.crop < 16:
        parser.error(f"--crop {args.crop}: must be ≥ 16 pixels")
    if args.margin < 0:
        parser.error(f"--margin {args.margin}: must be ≥ 0")
    if any(side < 64 for side in args.max_side):
        parser.error(f"--max-side {min(args.max_side)}: must be ≥ 64 pixels (as infer.max_side)")
    from pipeline.models import load_model
    from pipeline.photos import write_image

    try:
        model, _ = load_model(args.model)
    except DemoireError as error:
        raise InputDataError(f"--model {args.model}: {error}") from None
    rows, skipped = [], []
    for path, image in readable_photos(args.photos, skipped):
        if min(image.shape[:2]) < args.crop:
            skipped.append(f"{path} ({image.shape[1]}x{image.shape[0]}, smaller than --crop {args.crop})")
            continue
        top, left = strongest_moire_crop(image, args.crop)
        before = image[top : top + args.crop, left : left + args.crop]
        with torch.inference_mode():
            after = [restored_crop(model, image, top, left, args.crop, args.margin)]
            after += [shrunk_crop(model, image, top, left, args.crop, side) for side in args.max_side]
        row = Image.fromarray(np.concatenate([before, *after], axis=1))
        names = ["full size", *(f"--max-side {side}" for side in args.max_side)]
        ImageDraw.Draw(row).text((6, 4), f"{path.name} ({left},{top}): " + " | ".join(["input", *names]),
                                 fill=(255, 255, 255))
        rows.append(np.asarray(row))
        shares = "; ".join(
            f"{name}: " + ", ".join(f"{key} {share:.2f}" for key, share in band_shares(before, x).items())
            for name, x in zip(names, after))
        print(f"{path.name}: crop at ({left}, {top}); left of the input's energy: {shares}", flush=True)
    if skipped:
        print(f"skipped {len(skipped)} photo(s): {'; '.join(skipped)}", file=sys.stderr)
    if not rows:
        raise InputDataError("no photo could be shown: nothing written")
    write_image(args.out, np.concatenate(rows, axis=0), "jpg", args.quality)
    print(f"wrote {args.out}")
    if skipped:
        sys.exit(1)  # written, without the photos named above (as `demoire predict` exits)


if __name__ == "__main__":
    run(main)
