"""What a paired set's tone-aligned error is made of: blur, global tone curve, colour mixing, and the rest.

For each pair, the tone-aligned MSE of the untouched input (per-channel gain + offset fitted to the
truth, as the evaluation does), then how much of it each explanation removes when fitted per image
with the truth in hand (upper bounds, not something a model can learn unless it is the same from one
image to the next):
- blur: the truth blurred by the Gaussian (sigma from a grid) that best matches the input;
- tone curve: a per-channel cubic instead of the affine fit;
- colour mixing: a 3×3 matrix + offset instead of the per-channel fit (its saturation factor says
  whether the photo is duller or more vivid than the truth);
- light field: the per-channel fit's gain varying smoothly over the frame (a bowl in the distance r
  from the centre, r = 1 in the corners, and a tilt in x and y) instead of one gain; its bowl is the
  capture's falloff towards the corners (vignetting, and a screen's light fading with viewing angle),
  reported as k: the capture is 1 − k·r² as bright as the truth would put it;
- band shares: the luma residual's power below 0.005 cycles/px (vignetting, tone, the widest bands)
  and in 0.05–0.5 (the screen-grid moiré).
With --flat-field K…, also what a fixed correction of that falloff gains, the same for every photo
(the input times 1 / (1 − K·r²), scaled to keep its mean): mean raw and tone-aligned PSNR gains.
With --split σ…, where the tone-aligned error lies: the gain of removing exactly its chroma (the
residual minus its mean over R, G, B) or its luma (that mean), each finer than a Gaussian of σ px (the
Gaussian of `train.correction_width`), and all of each: upper bounds of what a colour-only or a
luma-only correction of that width could gain (mean over the group).
With --spatial TILE, how unevenly the moiré's strength spreads over the frame: the tone-aligned residual
over the local brightness (the truth's luma blurred at σ 16 px, so a dark area's weaker light does not
count as weaker moiré), band-passed between Gaussians of σ 1 and 16 px, its RMS in TILE² tiles of the
flattest half of the frame (by the truth's own band-passed luma: there the residual is not the content's
edges); the ratio of the 90th to the 10th percentile of those RMS, for its chroma and its luma. With
--window SIDE, within SIDE² windows of the frame (the median over them), to compare frames of other sizes.
With --shift R…, how much of the tone-aligned error is misregistration: the tone-aligned PSNR again with each
pixel compared with the best of its truth's pixels within ±R px (`tone_psnr_within_Rpx`; R = 0 is the plain
figure). Where the truth is flat a shift changes nothing, so moiré there counts whole; where it is textured a
shift also absorbs some moiré, so this bounds misregistration's share from above. Run on a folder of a model's
outputs beside the truths (same names, `moire/` and `clean/`), it scores the model the same way.
Prints one row per group (median over its pairs) and, with --per-image, every pair.

    python benchmarks/real_residuals.py ../shared/real-moire/paired --group fhdmi='fhdmi_*' \
        --group tip2018='tip2018_*'
    python benchmarks/real_residuals.py data/synthesize     # the same for a synthetic set (its own folder)
"""

from __future__ import annotations

import argparse
import fnmatch
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._args import groups_or_all, name_glob, run  # noqa: E402
from pipeline.data.dataset import to_tensor  # noqa: E402
from pipeline.data.paired_folder import find_paired_folder  # noqa: E402
from pipeline.evaluation.tone import align_tone  # noqa: E402
from pipeline.errors import InputDataError  # noqa: E402
from pipeline.io import read_rgb  # noqa: E402
from pipeline.models.correction import GaussianBlur  # noqa: E402
from pipeline.moire.optics import lens_blur  # noqa: E402

BLUR_SIGMAS = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
LUMA = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared error."""
    return float(((a - b) ** 2).mean())


def best_blur(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(tone-aligned MSE of x against the truth blurred to match it, that sigma)."""
    def blurred(sigma: float) -> torch.Tensor:
        return lens_blur(y[None].float(), torch.tensor([sigma]))[0].double() if sigma else y
    return min((mse(align_tone(x, blurred(s)), blurred(s)), s) for s in BLUR_SIGMAS)


def cubic_fit(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x through the per-channel cubic that best fits it to y."""
    out = torch.empty_like(x)
    for c in range(3):
        coefficients = np.polyfit(x[c].flatten().numpy(), y[c].flatten().numpy(), 3)
        out[c] = torch.from_numpy(np.polyval(coefficients, x[c].numpy()))
    return out.clamp(0, 1)


def colour_fit(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """x through the 3×3 matrix + offset that best fits it to y, and the matrix's saturation factor."""
    design = torch.cat([x.flatten(1), torch.ones(1, x[0].numel(), dtype=x.dtype)]).T
    solution = torch.linalg.lstsq(design, y.flatten(1).T).solution
    matrix = solution[:3].T
    diagonal, off = float(matrix.diagonal().mean()), float((matrix.sum() - matrix.trace()) / 6)
    return (design @ solution).T.reshape(x.shape).clamp(0, 1), (diagonal - off) / float(matrix.sum(1).mean())


def corner_distance_sq(height: int, width: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    """(r², u, v) over an image: u, v from −1 to 1 across it, r² the squared distance from the centre, 1 in the corners."""
    v, u = torch.meshgrid(torch.linspace(-1, 1, height, dtype=dtype), torch.linspace(-1, 1, width, dtype=dtype),
                          indexing="ij")
    return (u ** 2 * width ** 2 + v ** 2 * height ** 2) / (width ** 2 + height ** 2), u, v


def light_field_fit(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """x through the per-channel gain a + b·r² + c·u + d·v (and offset) that best fits it to y, and the
    falloff k = b/a towards the corners (u, v in [−1, 1]; r² = 1 in the corners), averaged over channels."""
    height, width = x.shape[-2:]
    r2, u, v = corner_distance_sq(height, width, x.dtype)
    out, falloffs = torch.empty_like(x), []
    for c in range(3):
        design = torch.stack([x[c], x[c] * r2, x[c] * u, x[c] * v, torch.ones_like(r2)]).flatten(1).T
        solution = torch.linalg.lstsq(design, y[c].flatten()[:, None]).solution[:, 0]
        out[c] = (design @ solution).reshape(height, width)
        falloffs.append(float(solution[1] / solution[0]))
    # y = a·x·(1 + (b/a)·r²): the capture is 1/(1 + (b/a)·r²) ≈ 1 − (b/a)·r² of the truth's level.
    return out.clamp(0, 1), float(np.mean(falloffs))


def flat_fielded(x: torch.Tensor, falloff: float) -> torch.Tensor:
    """x with a falloff of 1 − falloff·r² undone, scaled so its mean stays, quantised to 8 bits as served."""
    field = 1 / (1 - falloff * corner_distance_sq(*x.shape[-2:], x.dtype)[0])
    return (x * field / field.mean()).clamp(0, 1).mul(255).round().div(255)


def band_shares(residual: torch.Tensor) -> tuple[float, float]:
    """Shares of the luma residual's power below 0.005 and within 0.05–0.5 cycles/px."""
    luma = torch.einsum("c,chw->hw", LUMA, residual)
    power = torch.fft.fft2(luma).abs() ** 2
    f = torch.sqrt(torch.fft.fftfreq(luma.shape[0])[:, None] ** 2 + torch.fft.fftfreq(luma.shape[1])[None, :] ** 2)
    total = float(power.sum())
    return float(power[f < 0.005].sum()) / total, float(power[(f >= 0.05) & (f < 0.5)].sum()) / total


def split_gains(aligned: torch.Tensor, y: torch.Tensor, widths: list[float]) -> dict[str, float]:
    """Tone-aligned gains of removing the residual's chroma or luma, all of it and finer than each σ."""
    residual = aligned - y
    luma = residual.mean(dim=0, keepdim=True)  # one plane, blurred once; it broadcasts over R, G, B
    chroma = residual - luma
    base, gains = mse(aligned, y), {}
    for name, part in (("chroma", chroma), ("luma", luma)):
        gains[f"{name}_all_db"] = gain_db(base, mse(aligned - part, y))
        for sigma in widths:
            finer = part - GaussianBlur(sigma)(part[None].float())[0].double()
            gains[f"{name}_finer_{sigma:g}_db"] = gain_db(base, mse(aligned - finer, y))
    return gains


def bandpass(plane: torch.Tensor) -> torch.Tensor:
    """(C, H, W) between Gaussians of σ 1 and 16 px: the moiré's periods, without noise or tone."""
    return (GaussianBlur(1.0)(plane[None].float()) - GaussianBlur(16.0)(plane[None].float()))[0].double()


def tile_rms(plane: torch.Tensor, tile: int) -> torch.Tensor:
    """RMS over the channels and pixels of each whole TILE² tile of (C, H, W), flattened."""
    rows, cols = plane.shape[1] // tile, plane.shape[2] // tile
    tiles = plane[:, : rows * tile, : cols * tile].reshape(plane.shape[0], rows, tile, cols, tile)
    return tiles.square().mean(dim=(0, 2, 4)).sqrt().flatten()


def spatial_spread(aligned: torch.Tensor, y: torch.Tensor, tile: int) -> dict[str, float]:
    """p90 / p10 of the moiré's local strength over the flattest half of the tiles, chroma and luma."""
    luma_y = y.mean(dim=0, keepdim=True)
    relative = (aligned - y) / (GaussianBlur(16.0)(luma_y[None].float())[0].double() + 0.05)
    content = tile_rms(bandpass(luma_y), tile)
    flat = content <= content.median()
    luma = relative.mean(dim=0, keepdim=True)
    spread = {}
    for name, part in (("chroma", relative - luma), ("luma", luma)):
        strength = tile_rms(bandpass(part), tile)[flat].numpy()
        spread[f"{name}_spread"] = float(np.percentile(strength, 90) / max(np.percentile(strength, 10), 1e-12))
    return spread


def windowed_spread(aligned: torch.Tensor, y: torch.Tensor, tile: int, window: int | None) -> dict[str, float]:
    """`spatial_spread` of the whole frame, or its median over non-overlapping WINDOW² windows."""
    height, width = y.shape[-2:]
    if window is None or window > min(height, width):
        return spatial_spread(aligned, y, tile)
    spreads = [spatial_spread(align_tone(aligned[:, t : t + window, s : s + window], y[:, t : t + window, s : s + window]),
                              y[:, t : t + window, s : s + window], tile)
               for t in range(0, height - window + 1, window) for s in range(0, width - window + 1, window)]
    return {key: float(statistics.median(spread[key] for spread in spreads)) for key in spreads[0]}


def shift_tolerant_mse(aligned: torch.Tensor, y: torch.Tensor, radius: int) -> float:
    """MSE of 3×H×W `aligned` against truth `y`, each pixel against the best of y's pixels within ±radius px
    (the frame's inner part, `radius` px in from each side)."""
    height, width = y.shape[-2:]
    inner = aligned[:, radius:height - radius, radius:width - radius]
    best = None
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = y[:, radius + dy:height - radius + dy, radius + dx:width - radius + dx]
            error = (inner - shifted).square().sum(dim=0)
            best = error if best is None else torch.minimum(best, error)
    return float(best.mean() / y.shape[0])


def gain_db(before: float, after: float) -> float:
    """PSNR gain of an MSE change."""
    return float(10 * np.log10(before / after))


def analyse_pair(moire: Path, clean: Path, falloffs: list[float], widths: list[float], tile: int | None = None,
                 window: int | None = None, shifts: list[int] = ()) -> dict[str, float]:
    """Every figure of one pair."""
    x, y = (to_tensor(read_rgb(path)).double() for path in (moire, clean))
    aligned = align_tone(x, y)
    base = mse(aligned, y)
    blur_mse, sigma = best_blur(x, y)
    coloured, saturation = colour_fit(x, y)
    lit, falloff = light_field_fit(x, y)
    low, mid = band_shares(aligned - y)
    figures = {"tone_psnr": float(-10 * np.log10(base)), "blur_share": 1 - blur_mse / base, "blur_sigma": sigma,
               "cubic_db": gain_db(base, mse(cubic_fit(x, y), y)), "colour_db": gain_db(base, mse(coloured, y)),
               "saturation": saturation, "light_field_db": gain_db(base, mse(lit, y)), "falloff_k": falloff,
               "luma_below_0.005": low, "luma_0.05_0.5": mid}
    for k in falloffs:
        fielded = flat_fielded(x, k)
        figures[f"flat_{k}_raw_db"] = gain_db(mse(x, y), mse(fielded, y))
        figures[f"flat_{k}_tone_db"] = gain_db(base, mse(align_tone(fielded, y), y))
    for radius in shifts:
        tolerant = max(shift_tolerant_mse(aligned, y, radius), 1e-12)  # a perfect match: 120 dB, not infinity
        figures[f"tone_psnr_within_{radius}px"] = float(-10 * np.log10(tolerant))
    if tile:
        figures.update(windowed_spread(aligned, y, tile, window))
    return {**figures, **(split_gains(aligned, y, widths) if widths else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="a paired folder (any importer layout)")
    parser.add_argument("--group", type=name_glob, action="append", default=[],
                        help="NAME=GLOB on pair names; repeatable")
    parser.add_argument("--per-image", action="store_true")
    parser.add_argument("--flat-field", type=float, nargs="+", default=[], metavar="K",
                        help="also score a fixed correction of each falloff K (0 < K < 1)")
    parser.add_argument("--split", type=float, nargs="+", default=[], metavar="SIGMA",
                        help="also the gains of removing the chroma or luma residual finer than each SIGMA px")
    parser.add_argument("--spatial", type=int, default=None, metavar="TILE",
                        help="also how unevenly the moiré's strength spreads over the frame, in TILE² tiles")
    parser.add_argument("--shift", type=int, nargs="+", default=[], metavar="R",
                        help="also the tone-aligned PSNR with each pixel matched within ±R px of its truth")
    parser.add_argument("--window", type=int, default=None, metavar="SIDE",
                        help="with --spatial: within SIDE² windows of each frame (their median)")
    args = parser.parse_args()
    if any(radius < 0 for radius in args.shift):
        parser.error(f"--shift {args.shift}: each radius must be ≥ 0 pixels")
    if any(not 0 < k < 1 for k in args.flat_field):
        parser.error(f"--flat-field {args.flat_field}: each falloff must be between 0 and 1")
    groups = groups_or_all(args.group)
    found = find_paired_folder(args.root)
    for name, glob in groups.items():
        rows = []
        for pair in found.pairs:
            if fnmatch.fnmatch(pair.name, glob):
                rows.append(analyse_pair(pair.moire_path, pair.clean_path, args.flat_field, args.split, args.spatial,
                                         args.window, args.shift))
                if args.per_image:
                    print(pair.name, {k: round(v, 3) for k, v in rows[-1].items()})
        if not rows:
            raise InputDataError(f"--group {name}={glob}: no pair of {args.root} matches")
        if rows:
            medians = {key: round(float(statistics.median(row[key] for row in rows)), 3) for key in rows[0]}
            ranges = {key: (round(min(r[key] for r in rows), 2), round(max(r[key] for r in rows), 2))
                      for key in ("saturation", "falloff_k")}
            print(f"{name} ({len(rows)} pairs): medians {medians}; saturation range {ranges['saturation']}; "
                  f"falloff range {ranges['falloff_k']}")
            for k in args.flat_field:
                raw, tone = (round(float(np.mean([r[f"flat_{k}_{m}_db"] for r in rows])), 3) for m in ("raw", "tone"))
                print(f"{name}: a fixed flat field of falloff {k}: mean gain raw {raw:+} dB, tone-aligned {tone:+} dB")
            split = [key for key in rows[0] if key.startswith(("chroma_", "luma_")) and key.endswith("_db")]
            if split:
                means = {key[:-3]: round(float(np.mean([r[key] for r in rows])), 2) for key in split}
                print(f"{name}: mean tone-aligned gain of removing exactly (dB): {means}")


if __name__ == "__main__":
    run(main)
