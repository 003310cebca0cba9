"""A gallery of what `infer.falloff` does to whole photos: one row per photo, input | the share of its estimated
screen falloff undone (pipeline.falloff, no model) | the field itself (its light over the frame, white at its
brightest), each shrunk to --width. Unreadable photos are skipped and named.

    python benchmarks/falloff_gallery.py --out docs/gallery/falloff.jpg ../shared/real-moire/unpaired/uhdm_*_moire.jpg
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._args import jpeg_output, jpeg_quality, run  # noqa: E402
from pipeline.errors import InputDataError  # noqa: E402
from pipeline.falloff import estimate_falloff, undo_falloff  # noqa: E402
from real_gallery import readable_photos  # noqa: E402  (benchmarks/real_gallery.py, beside this script)


def shrunk(image: np.ndarray, width: int) -> np.ndarray:
    """`image` resized to `width` pixels wide (area average), its aspect kept."""
    import cv2

    height = max(round(image.shape[0] * width / image.shape[1]), 1)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def gallery_row(image: np.ndarray, strength: float, width: int) -> tuple[np.ndarray, str]:
    """input | falloff undone | the field as grey, side by side at `width` each; and the field's caption."""
    field = estimate_falloff(image)
    light = np.exp(field.log_light(*image.shape[:2]))
    grey = np.repeat(np.rint(255 * light / light.max()).astype(np.uint8)[..., None], 3, axis=2)
    tiles = [shrunk(x, width) for x in (image, undo_falloff(image, field, strength), grey)]
    caption = (f"a {field.curvature:+.2f}, b {field.tilt_x:+.2f}, c {field.tilt_y:+.2f}; "
               f"darkest {light.min() / light.max():.2f} of brightest")
    return np.concatenate(tiles, axis=1), caption


def main() -> None:
    """Write the gallery."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path, nargs="+")
    parser.add_argument("--out", type=jpeg_output, required=True)
    parser.add_argument("--width", type=int, default=480, help="each column's width in pixels")
    parser.add_argument("--strength", type=float, default=0.5, help="share of the field undone (infer.falloff)")
    parser.add_argument("--quality", type=jpeg_quality, default=88)
    args = parser.parse_args()
    if args.width < 16:
        parser.error(f"--width {args.width}: must be ≥ 16 pixels")
    if not 0 <= args.strength <= 1:
        parser.error(f"--strength {args.strength}: must be within 0 … 1 (as infer.falloff)")
    from pipeline.photos import write_image

    rows, skipped = [], []
    for path, image in readable_photos(args.photos, skipped):
        row, caption = gallery_row(image, args.strength, args.width)
        labelled = Image.fromarray(row)
        ImageDraw.Draw(labelled).text((6, 4), f"{path.name}: input | {args.strength:g} of the falloff undone | "
                                              f"the field ({caption})", fill=(255, 0, 0))
        rows.append(np.asarray(labelled))
        print(f"{path.name}: {caption}")
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    if not rows:
        raise InputDataError("no readable photo: nothing written")
    width = max(row.shape[1] for row in rows)
    padded = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows]
    write_image(args.out, np.concatenate(padded, axis=0), "jpg", args.quality)
    print(f"wrote {args.out} ({len(rows)} photos, {len(skipped)} skipped)")
    if skipped:
        sys.exit(1)  # written, without the photos named above (as `demoire predict` exits)


if __name__ == "__main__":
    run(main)
