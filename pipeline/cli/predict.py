"""`demoire predict`: restore photos of any size, tiled."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.progress import track

from pipeline.cli.common import app, err, fail, infer_params, load_net
from pipeline.errors import DemoireError, InputDataError


def _input_images(inputs: list[str], out: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, output file) pairs from files, folders (recursively, sub-paths kept) and globs; and problems.

    Globs are expanded here too, since a quoted pattern (or a Windows shell) leaves them unexpanded.
    """
    import glob

    from pipeline.sources.folders import IMAGE_SUFFIXES, image_files

    pairs, problems = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pairs += [(f, out / f.relative_to(path).with_suffix(".png")) for f in image_files(path)]
        elif path.is_file():
            pairs.append((path, out / (path.stem + ".png")))
        elif glob.has_magic(item):
            matches = [Path(m) for m in sorted(glob.glob(item, recursive=True))]
            matches = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_SUFFIXES]
            pairs += [(m, out / (m.stem + ".png")) for m in matches]
            if not matches:
                problems.append(f"no image matches {item}")
        else:
            problems.append(f"no such file or folder: {item}")
    return pairs, problems


@app.command()
def predict(
    inputs: list[str] = typer.Argument(..., help="image files, folders (recursively) or globs such as 'photos/*.jpg'"),
    out: Path = typer.Option(..., "-o", "--out", help="output folder: NAME.png per input (sub-paths of folders kept)"),
    model: str = typer.Option("data/train", help="model folder or models:/<name>@<alias>"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    overwrite: bool = typer.Option(False, help="replace existing output files"),
    params: Path | None = typer.Option(None, help="params file whose infer section applies [default: ./params.yaml if present]"),
    tile: int | None = typer.Option(None, help="tile side in pixels [default: infer.tile_size]"),
    overlap: int | None = typer.Option(None, help="pixels shared by neighbouring tiles [default: infer.tile_overlap]"),
    max_pixels: int | None = typer.Option(None, help="skip larger images, width x height [default: infer.max_pixels]"),
) -> None:
    """Restore moiré photos of any size (tiled); unreadable, too large or existing outputs are skipped (exit 1 if any)."""
    import statistics

    from pipeline.inference import check_tiling, restore_image, spatial_multiple
    from pipeline.io import read_rgb, write_png

    try:
        cfg = infer_params(params, tile_size=tile, tile_overlap=overlap, max_pixels=max_pixels)
        net, torch_device = load_net(model, device)
        check_tiling(cfg.tile_size, cfg.tile_overlap, cfg.tile_batch, spatial_multiple(net))
    except DemoireError as exc:
        fail(exc)
    pairs, problems = _input_images(inputs, out)
    for problem in problems:
        err.print(f"skipped {problem}", highlight=False)
    failed, seconds, written = len(problems), [], set()
    start = time.perf_counter()
    for path, target in track(pairs, description="restoring", console=err):
        if target in written or (target.exists() and not overwrite):
            reason = "written earlier in this run from another input" if target in written else "exists (use --overwrite)"
            err.print(f"skipped {path}: {target} {reason}", highlight=False)
            failed += 1
            continue
        began = time.perf_counter()
        try:
            image = read_rgb(path, cfg.max_pixels)
            write_png(target, restore_image(net, image, torch_device, cfg.tile_size, cfg.tile_overlap, cfg.tile_batch))
        except InputDataError as exc:
            err.print(f"skipped {path}: {exc}", highlight=False)
            failed += 1
            continue
        written.add(target)
        seconds.append(time.perf_counter() - began)
    median = f", median {statistics.median(seconds):.2f} s per image" if seconds else ""
    err.print(f"restored {len(seconds)} of {len(pairs) + len(problems)} images in "
              f"{time.perf_counter() - start:.1f} s{median}", highlight=False)
    if failed:
        raise typer.Exit(1)
