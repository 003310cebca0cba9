"""Square crops of a paired folder's pairs, for scoring a served step on cut-outs of whole photos.

A set of crops (a 700×700 cut of a 4K capture, a tile) has its screen falloff off centre, where a whole photo's
is not; `demoire evaluate --pairs OUT` on these crops checks that a step chosen on whole photos (`--falloff`)
does not turn into a loss there. Each pair whose sides are both at least --size gives five crops of the same
place in both images: its four corners and its centre (`NAME_tl`, `_tr`, `_bl`, `_br`, `_c`); smaller pairs and
unreadable ones are named on stderr and skipped (exit 1; nothing is written when no pair is cut, exit 2). The
crops go to OUT/moire and OUT/clean as PNG, written together once every pair is cut.

    python benchmarks/crop_pairs.py ../shared/real-moire/paired --include 'fhdmi_*' --size 700 --out /tmp/crops
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._args import positive_count, run  # noqa: E402
from pipeline.data.paired_folder import decoded_pairs, find_paired_folder  # noqa: E402
from pipeline.errors import InputDataError  # noqa: E402
from pipeline.io import atomic_dir, check_output_dir, write_png  # noqa: E402

PLACES = ("tl", "tr", "bl", "br", "c")


def crop_origins(height: int, width: int, size: int) -> dict[str, tuple[int, int]]:
    """(top, left) of each place's crop of side `size` in an image of `height` × `width`."""
    bottom, right = height - size, width - size
    return {"tl": (0, 0), "tr": (0, right), "bl": (bottom, 0), "br": (bottom, right), "c": (bottom // 2, right // 2)}


def crops(image: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """The five crops of `image`, by place."""
    return {place: image[top:top + size, left:left + size]
            for place, (top, left) in crop_origins(*image.shape[:2], size).items()}


def main() -> None:
    """Cut every selected pair into its five crops."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", type=Path, help="paired folder: moire/ + clean/, or a published dataset's layout")
    parser.add_argument("--include", default="*", help="glob on pair names (default: every pair)")
    parser.add_argument("--size", type=positive_count, default=700, help="side of the square crops in pixels")
    parser.add_argument("--out", type=Path, required=True, help="folder for moire/ and clean/ (new or empty)")
    args = parser.parse_args()
    check_output_dir(args.out)
    if args.out.is_dir() and any(args.out.iterdir()):
        raise InputDataError(f"--out {args.out} is not empty; name a new or empty folder")
    found = find_paired_folder(args.pairs, include=args.include)
    skipped = [(item.name, item.reason) for item in found.skipped]
    written: dict[str, str] = {}  # crop stem → the pair cut under it
    with atomic_dir(args.out, whole=True) as staging:
        for name, (moire, clean) in decoded_pairs(found.pairs, skipped):
            stem = str(Path(name).with_suffix("")).replace("/", "_")  # a dataset's names hold its split folders
            if min(moire.shape[:2]) < args.size:
                skipped.append((name, f"{moire.shape[1]}×{moire.shape[0]} is smaller than {args.size}"))
            elif stem in written:
                skipped.append((name, f"its crops would be named as those of {written[stem]} ({stem}_*.png)"))
            else:
                for kind, image in (("moire", moire), ("clean", clean)):
                    for place, crop in crops(image, args.size).items():
                        write_png(staging / kind / f"{stem}_{place}.png", crop)
                written[stem] = name
        for name, reason in skipped:
            print(f"skipped {name}: {reason}", file=sys.stderr)
        if not written:
            raise InputDataError(f"no pair of {args.pairs} is at least {args.size} px on each side: nothing written")
    pairs = "pair" if len(written) == 1 else "pairs"
    print(f"{len(written) * len(PLACES)} crops of {len(written)} {pairs} in {args.out} ({len(skipped)} skipped)")
    if skipped:
        sys.exit(1)  # written, without the pairs named above (the project's exit codes: 1, done with some skipped)


if __name__ == "__main__":
    run(main)
