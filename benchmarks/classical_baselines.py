"""Classical filters as a yardstick for learned models on real paired photos: what needs no training at all.

A model trained on synthetic moiré that scores no better on real photos than a fixed filter has learned
nothing about real moiré that the filter does not assume. Each filter works in BT.601 YCbCr (as a JPEG
decoder does) and changes only the chroma, like the `quick` profile's `correction: chroma`:
- `chroma_blur:SIGMA`: Cb and Cr blurred by a Gaussian of SIGMA px (cv2.GaussianBlur);
- `guided:R:EPS`: Cb and Cr through the guided filter of He et al. (2010) with the luma as its guide, box radius
  R px and regulariser EPS (on [0, 1] values): colour that follows the luma's edges is kept, colour texture the
  luma does not carry (colour moiré) is smoothed.
Outputs are quantised to 8 bits as served. Scores as `demoire evaluate`: raw and tone-aligned PSNR / SSIM
(per-channel gain + offset fitted to the truth), gains over the untouched input, means over each group's pairs.

    python benchmarks/classical_baselines.py ../shared/real-moire/paired --group fhdmi='fhdmi_*' \
        --group tip2018='tip2018_*' [--filter guided:4:0.001 --filter chroma_blur:2 …] [--json OUT]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._args import groups_or_all, name_glob, output_file, run  # noqa: E402
from pipeline.data.dataset import to_tensor  # noqa: E402
from pipeline.data.paired_folder import find_paired_folder  # noqa: E402
from pipeline.evaluation.evaluate import image_scores  # noqa: E402
from pipeline.errors import InputDataError  # noqa: E402
from pipeline.io import read_rgb, write_json  # noqa: E402
from pipeline.moire.jpeg import RGB_TO_YCBCR as JPEG_RGB_TO_YCBCR  # noqa: E402

DEFAULT_FILTERS = ("chroma_blur:1", "chroma_blur:2", "chroma_blur:4", "guided:2:0.001", "guided:4:0.001",
                   "guided:4:0.0001", "guided:8:0.001")
RGB_TO_YCBCR = np.array(JPEG_RGB_TO_YCBCR)  # JFIF's, as the simulated camera's JPEG uses
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)
SCORES = ("psnr", "ssim", "tone_psnr", "tone_ssim")  # of `demoire evaluate`'s per-image scores


def guided_filter(guide: np.ndarray, plane: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """`plane` smoothed where `guide` is flat and kept where it has edges (He et al., box windows of 2R+1)."""
    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)
    mean_g, mean_p = box(guide), box(plane)
    a = (box(guide * plane) - mean_g * mean_p) / (box(guide * guide) - mean_g ** 2 + eps)
    b = mean_p - a * mean_g
    return box(a) * guide + box(b)


def to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """An H×W×3 uint8 image as float64 Y, Cb, Cr on [0, 1] values (Cb and Cr centred on 0)."""
    return (rgb.astype(np.float64) / 255.0) @ RGB_TO_YCBCR.T


def apply_filter(spec: str, rgb: np.ndarray) -> np.ndarray:
    """An H×W×3 uint8 image through the filter `spec` (module docstring), as uint8."""
    kind, *args = spec.split(":")
    ycbcr = to_ycbcr(rgb)
    for c in (1, 2):
        if kind == "chroma_blur":
            ycbcr[..., c] = cv2.GaussianBlur(ycbcr[..., c], (0, 0), float(args[0]), borderType=cv2.BORDER_REFLECT)
        elif kind == "guided":
            ycbcr[..., c] = guided_filter(ycbcr[..., 0], ycbcr[..., c], int(args[0]), float(args[1]))
        else:
            raise SystemExit(f"--filter {spec!r}: the kind must be chroma_blur or guided")
    return np.clip(np.rint(ycbcr @ YCBCR_TO_RGB.T * 255.0), 0, 255).astype(np.uint8)


def scores(image: np.ndarray, truth_tensor) -> dict[str, float]:
    """Raw and tone-aligned PSNR / SSIM of an uint8 image against its truth, as `demoire evaluate` scores it."""
    every = image_scores(to_tensor(image), truth_tensor)
    return {key: every[key] for key in SCORES}


def group_table(pairs: list, filters: list[str]) -> dict[str, dict[str, float]]:
    """Mean gains of each filter over the identity, over the pairs: {filter: {metric_gain: value}}."""
    gains: dict[str, list[dict[str, float]]] = {spec: [] for spec in filters}
    for pair in pairs:
        moire, truth = read_rgb(pair.moire_path), to_tensor(read_rgb(pair.clean_path))
        identity = scores(moire, truth)
        for spec in filters:
            filtered = scores(apply_filter(spec, moire), truth)
            gains[spec].append({f"{k}_gain": filtered[k] - identity[k] for k in identity})
    return {spec: {k: float(np.mean([row[k] for row in rows])) for k in rows[0]} for spec, rows in gains.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="a paired folder (any importer layout)")
    parser.add_argument("--group", type=name_glob, action="append", default=[],
                        help="NAME=GLOB on pair names; repeatable")
    parser.add_argument("--filter", action="append", default=[], help=f"repeatable; default: {' '.join(DEFAULT_FILTERS)}")
    parser.add_argument("--json", type=output_file, help="also write every figure to this file")
    args = parser.parse_args()
    groups = groups_or_all(args.group)
    filters = args.filter or list(DEFAULT_FILTERS)
    for spec in filters:  # a misspelt filter stops here, before any photo is read
        try:
            apply_filter(spec, np.zeros((8, 8, 3), np.uint8))
        except (IndexError, ValueError, cv2.error):
            parser.error(f"--filter {spec}: give NAME:ARGS as in the default ({' '.join(DEFAULT_FILTERS)})")
    found = find_paired_folder(args.root)
    results = {}
    for name, pattern in groups.items():
        pairs = [pair for pair in found.pairs if fnmatch.fnmatch(pair.name, pattern)]
        if not pairs:
            raise InputDataError(f"--group {name}={pattern}: no pair of {args.root} matches")
        results[name] = group_table(pairs, filters)
        print(f"{name} ({len(pairs)} pairs): gain over the input, raw / tone-aligned PSNR (dB); SSIM raw / tone-aligned")
        for spec, g in results[name].items():
            print(f"  {spec:18s} {g['psnr_gain']:+.2f} / {g['tone_psnr_gain']:+.2f}   "
                  f"{g['ssim_gain']:+.4f} / {g['tone_ssim_gain']:+.4f}")
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    run(main)
