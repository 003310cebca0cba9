"""`demoire predict`: restore photos of any size, tiled, written as PNG, JPEG or WebP."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import typer

from pipeline.cli.common import (DEFAULT_MODEL, FALLOFF_OPTION, MAX_SIDE_OPTION, Device, ImageFormat, app, err, fail,
                                 infer_params, load_net)
from pipeline.errors import DemoireError, InputDataError, ParamsError
from pipeline.lifetime import unwinds_on_sigterm
from pipeline.progress import progress_mode, track_progress


def _input_images(inputs: list[str], out: Path, suffix: str = ".png") -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, output file) pairs from files, folders (recursively, sub-paths kept) and globs; and problems.

    Globs are expanded here too, since a quoted pattern (or a Windows shell) leaves them unexpanded.
    """
    import glob

    from pipeline.sources.folders import IMAGE_SUFFIXES, find_images

    pairs, problems = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found, unlisted = find_images(path)
            # an output folder inside an input folder holds this command's results, not photos to restore
            if _strictly_inside(out, path):
                found = [f for f in found if not _strictly_inside(f, out)]
            pairs += [(f, out / f.relative_to(path).with_suffix(suffix)) for f in found]
            problems += [f"folder {folder}: cannot be listed (permission denied?)" for folder in unlisted]
            if not found and not unlisted:
                kinds = ", ".join(sorted(IMAGE_SUFFIXES))
                problems.append(f"no image in folder {item} ({kinds} files, searched recursively)")
        elif path.is_file():
            pairs.append((path, out / (path.stem + suffix)))
        elif glob.has_magic(item):
            matches = [Path(m) for m in sorted(glob.glob(item, recursive=True))]
            matches = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_SUFFIXES]
            pairs += [(m, out / (m.stem + suffix)) for m in matches]
            if not matches:
                problems.append(f"no image matches {item}")
        else:
            problems.append(f"{item}: no such file or folder")
    return pairs, problems


def _real(path: Path) -> Path:
    """`path` with its links resolved as far as they go (a link loop is left as it is, not an error)."""
    return Path(os.path.realpath(path))


def _strictly_inside(path: Path, folder: Path) -> bool:
    """Whether `path` lies below `folder` (links resolved), not at it."""
    inner, outer = _real(path), _real(folder)
    return inner != outer and inner.is_relative_to(outer)


FileId = tuple[int, int] | str


def _file_id(path: Path) -> FileId | None:
    """The (device, inode) of the file `path` names, links followed; None if there is none. Two spellings of one
    file (a link, another letter case on macOS or Windows) have the same id, which their path strings need not.
    Where a drive reports no inodes (0: some network and FUSE drives), its real path, case-folded as the OS does."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    if status.st_ino == 0:
        return os.path.normcase(os.path.realpath(path))
    return status.st_dev, status.st_ino


def _not_written_because(target: Path, written: set[FileId], originals: set[FileId], overwrite: bool) -> str | None:
    """Why `target` is not written (None: it is): another input's output, an input itself, or existing."""
    existing = _file_id(target)
    if existing is None:
        return None
    if existing in written:
        return "written earlier in this run from another input"
    if existing in originals:
        return "is an input of this run (name another -o)"
    return None if overwrite else "exists (use --overwrite)"


def _check_inputs(inputs: list[str], out: str) -> None:
    """Refuse an empty argument (an unset shell variable), which would otherwise mean the current folder, and an -o
    that names an image file, which would otherwise become a folder of that name."""
    from pipeline.sources.folders import IMAGE_SUFFIXES

    if out == "":
        raise ParamsError("-o is empty (an unset shell variable?): name the output folder")
    explicit_folder = out.endswith(("/", os.sep))  # results.jpg/ says it is a folder
    if Path(out).suffix.lower() in IMAGE_SUFFIXES and not Path(out).is_dir() and not explicit_folder:
        raise ParamsError(f"-o {out} looks like an image file, but -o names a folder (NAME.FORMAT per input; "
                          "--format picks FORMAT): name a folder")
    if "" in inputs:
        raise ParamsError(f"input {inputs.index('') + 1} of {len(inputs)} is empty (an unset shell variable?): name "
                          "image files, folders or globs")


def _progress_mode(quiet: bool) -> str:
    """`off` with -q; else pipeline.progress's choice (a bar on a terminal), its log lines shown even without -v."""
    if quiet:
        return "off"
    mode = progress_mode()
    if mode == "log" and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("pipeline.progress").setLevel(logging.INFO)
    return mode


@app.command()
@unwinds_on_sigterm
def predict(
    inputs: list[str] = typer.Argument(..., help="image files, folders (recursively) or globs such as 'photos/*.jpg'"),
    out_text: str = typer.Option(..., "-o", "--out", metavar="PATH",
                                 help="output folder: NAME.FORMAT per input (sub-paths of folders kept)"),
    model: str = typer.Option(DEFAULT_MODEL,
                              help="model folder, models:/<name>@<alias>, or an exported .onnx / .pt file"),
    device: Device = typer.Option("auto", help="where the model runs (.onnx files: onnxruntime on the CPU)"),
    overwrite: bool = typer.Option(False, help="replace existing output files"),
    image_format: ImageFormat = typer.Option("png", "--format", help="output format"),
    quality: int = typer.Option(90, min=1, max=100, help="JPEG and WebP quality"),
    keep_metadata: bool = typer.Option(False, help="copy each photo's EXIF (camera, date, GPS…) into its output; "
                                                   "orientation reset, since outputs are upright"),
    params: Path | None = typer.Option(None, help="params file whose infer section applies [default: ./params.yaml if present]"),
    tile: int | None = typer.Option(None, help="tile side in pixels [default: infer.tile_size]"),
    overlap: int | None = typer.Option(None, help="pixels shared by neighbouring tiles [default: infer.tile_overlap]"),
    max_pixels: int | None = typer.Option(None, help="skip larger images, width x height [default: infer.max_pixels]"),
    max_side: int | None = MAX_SIDE_OPTION,
    falloff: float | None = FALLOFF_OPTION,
    as_json: bool = typer.Option(False, "--json", help="print one JSON object: restored and skipped inputs, times"),
) -> None:
    """Restore moiré photos of any size (tiled); unreadable, too large or existing outputs are skipped (exit 1 if any).

    Photos are read upright (EXIF orientation) and converted to sRGB from their colour profile.
    """
    import statistics

    from pipeline.inference import check_tiling, restore_image, spatial_multiple
    from pipeline.io import check_output_dir, json_text
    from pipeline.photos import check_output_size, read_photo, write_image

    out = Path(out_text)
    image_format = "jpg" if image_format == "jpeg" else image_format
    try:
        _check_inputs(inputs, out_text)
        check_output_dir(out, "-o")
        cfg = infer_params(params, tile_size=tile, tile_overlap=overlap, max_pixels=max_pixels,
                           max_side=max_side, falloff=falloff)
        net, torch_device = load_net(model, device)
        check_tiling(cfg.tile_size, cfg.tile_overlap, cfg.tile_batch, spatial_multiple(net))
    except DemoireError as exc:
        fail(exc)
    pairs, problems = _input_images(inputs, out, "." + image_format)
    skipped = [{"input": None, "reason": problem} for problem in problems]
    for problem in problems:
        err.print(f"skipped {problem}", highlight=False)
    restored, written = [], set()
    originals = {_file_id(path) for path, _ in pairs} - {None}  # never written over, --overwrite or not
    start = time.perf_counter()
    for path, target in track_progress(pairs, "restoring", unit="images", mode=_progress_mode(not err.notes)):
        reason = _not_written_because(target, written, originals, overwrite)
        if reason:
            err.print(f"skipped {path}: {target} {reason}", highlight=False)
            skipped.append({"input": str(path), "reason": f"{target} {reason}"})
            continue
        began = time.perf_counter()
        try:
            photo = read_photo(path, cfg.max_pixels)
            check_output_size(image_format, photo.rgb.shape[1], photo.rgb.shape[0], str(path))
            result = restore_image(net, photo.rgb, torch_device, cfg.tile_size, cfg.tile_overlap, cfg.tile_batch,
                                   max_side=cfg.max_side, falloff=cfg.falloff)
            # never over a file another run wrote meanwhile, unless --overwrite
            write_image(target, result, image_format, quality, photo.exif if keep_metadata else None, overwrite)
        except InputDataError as exc:
            err.print(f"skipped {path}: {exc}", highlight=False)
            skipped.append({"input": str(path), "reason": str(exc)})
            continue
        except OSError as exc:  # the disk filled up, the folder went away: this image is lost, the rest may not be
            reason = f"cannot write {target} ({exc.strerror})"
            err.print(f"skipped {path}: {reason}", highlight=False)
            skipped.append({"input": str(path), "reason": reason})
            continue
        written.add(_file_id(target))
        restored.append({"input": str(path), "output": str(target), "seconds": time.perf_counter() - began,
                         "width": int(result.shape[1]), "height": int(result.shape[0])})
    seconds = [item["seconds"] for item in restored]
    total = time.perf_counter() - start
    if as_json:
        typer.echo(json_text({"restored": restored, "skipped": skipped, "count": len(pairs) + len(problems),
                              "seconds": total, "median_seconds": statistics.median(seconds) if seconds else None}))
    median = f", median {statistics.median(seconds):.2f} s per image" if seconds else ""
    unfound = f" ({len(problems)} of the inputs named no image)" if problems else ""
    err.note(f"restored {len(seconds)} of {len(pairs)} images{unfound} in {total:.1f} s{median}")
    if skipped:
        raise typer.Exit(1)
