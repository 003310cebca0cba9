"""Edges users found: what each command does with an image its output format cannot hold, metadata too long for a
JPEG, an output folder inside its input, a folder it cannot list, `-q` with a spinner, skipped pairs' exit code,
a calibration base or layout that cannot work, a device that is not there and a grid that is not an image."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.io import read_rgb, write_png
from pipeline.models import ModelSpec, build_model, save_model

runner = CliRunner()


@pytest.fixture
def model(tmp_path) -> str:
    spec = ModelSpec("unet", 8, 2)
    save_model(build_model(spec), spec, tmp_path / "model")
    return str(tmp_path / "model")


def _predict(inputs: list[str], out: Path, model: str, *extra: str):
    return runner.invoke(app, ["predict", *inputs, "-o", str(out), "--model", model, "--device", "cpu",
                               "--tile", "32", "--overlap", "8", *extra])


def test_an_image_too_wide_for_webp_is_skipped_before_restoring_and_the_rest_are_restored(tmp_path, model):
    write_png(tmp_path / "in" / "a_wide.png", np.zeros((2, 16_400, 3), np.uint8))
    write_png(tmp_path / "in" / "b.png", np.zeros((20, 20, 3), np.uint8))
    result = _predict([str(tmp_path / "in")], tmp_path / "out", model, "--format", "webp")
    assert result.exit_code == 1, result.output
    assert (f"skipped {tmp_path / 'in' / 'a_wide.png'}: {tmp_path / 'in' / 'a_wide.png'} is 16400x2: webp stores at "
            "most 16,383 pixels a side; choose png") in result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b.webp"]


def test_metadata_too_long_for_a_jpeg_is_dropped_with_a_warning_and_the_image_kept(tmp_path, model, caplog):
    exif = Image.Exif()
    exif[0x010E] = "x" * 70_000  # ImageDescription: over the 64 KiB a JPEG's APP1 segment holds
    Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(tmp_path / "tagged.png", exif=exif.tobytes())
    with caplog.at_level(logging.WARNING, logger="pipeline.photos"):
        result = _predict([str(tmp_path / "tagged.png")], tmp_path / "out", model, "--format", "jpg",
                          "--keep-metadata")
    assert result.exit_code == 0, result.output
    assert "dropped: a JPEG holds at most 65,533" in caplog.text
    with Image.open(tmp_path / "out" / "tagged.jpg") as restored:
        assert restored.size == (20, 20) and not restored.getexif()


def test_an_output_folder_inside_the_input_folder_is_not_restored_again(tmp_path, model):
    shots = tmp_path / "shots"
    write_png(shots / "a.png", np.zeros((20, 20, 3), np.uint8))
    for _ in range(2):
        result = _predict([str(shots)], shots / "restored", model, "--overwrite")
        assert result.exit_code == 0, result.output
        assert "restored 1 of 1 images" in result.output
    assert sorted(str(p.relative_to(shots)) for p in shots.rglob("*.png")) == ["a.png", "restored/a.png"]



def test_predict_never_writes_over_its_inputs_and_restores_into_the_input_folder_itself(tmp_path, model):
    shots = tmp_path / "shots"
    write_png(shots / "a.png", np.full((20, 20, 3), 90, np.uint8))
    write_png(shots / "b.png", np.full((20, 20, 3), 30, np.uint8))
    photos = {p.name: p.read_bytes() for p in shots.iterdir()}
    same = _predict([str(shots / "a.png")], shots, model, "--overwrite")
    assert same.exit_code == 1 and f"skipped {shots / 'a.png'}: {shots / 'a.png'} is an input of this run" in (
        same.output)
    folder = _predict([str(shots)], shots, model, "--overwrite", "--format", "jpg")  # -o the input folder: before,
    assert folder.exit_code == 0, folder.output  # every image was taken for an output and nothing restored
    assert "restored 2 of 2 images" in folder.output
    assert sorted(p.name for p in shots.iterdir()) == ["a.jpg", "a.png", "b.jpg", "b.png"]
    inner = tmp_path / "outer" / "inner"
    write_png(inner / "c.png", np.zeros((20, 20, 3), np.uint8))
    around = _predict([str(inner)], tmp_path / "outer", model)  # -o a folder holding the input folder
    assert around.exit_code == 0 and (tmp_path / "outer" / "c.png").is_file(), around.output
    assert {name: (shots / name).read_bytes() for name in photos} == photos


def test_predict_knows_one_output_file_by_two_spellings(tmp_path, model):
    photos, out = tmp_path / "in", tmp_path / "out"
    write_png(photos / "x.png", np.full((20, 20, 3), 90, np.uint8))
    write_png(photos / "sub" / "x.png", np.full((20, 20, 3), 30, np.uint8))
    out.mkdir()
    (out / "sub").symlink_to(".")  # out/sub/x.png is out/x.png: before, the second result replaced the first
    result = _predict([str(photos)], out, model, "--overwrite")
    assert result.exit_code == 1 and "restored 1 of 2 images" in result.output, result.output
    assert "written earlier in this run from another input" in result.output


def test_predict_on_a_drive_without_inodes_tells_files_apart_by_their_paths(tmp_path, model, monkeypatch):
    import os
    import types

    import pipeline.cli.predict as predict_module

    def stat_without_inode(path, *args, **kwargs):  # sshfs-win, some network shares: st_ino 0 for every file
        real = os.stat(path, *args, **kwargs)
        return types.SimpleNamespace(st_dev=real.st_dev, st_ino=0)

    monkeypatch.setattr(predict_module, "os", types.SimpleNamespace(**{**vars(os), "stat": stat_without_inode}))
    shots = tmp_path / "shots"
    for name in ("a.png", "b.png"):
        write_png(shots / name, np.full((20, 20, 3), 90, np.uint8))
    for _ in range(2):  # before: the rerun took every existing output for an input and restored nothing
        rerun = _predict([str(shots)], tmp_path / "out", model, "--overwrite")
        assert rerun.exit_code == 0 and "restored 2 of 2 images" in rerun.output, rerun.output
    same = _predict([str(shots / "a.png")], shots, model, "--overwrite")
    assert same.exit_code == 1 and "is an input of this run" in same.output


def test_predict_skips_a_link_loop_in_a_folder_and_refuses_an_empty_argument(tmp_path, model):
    shots = tmp_path / "shots"
    write_png(shots / "a.png", np.zeros((20, 20, 3), np.uint8))
    (shots / "loop1.png").symlink_to(shots / "loop2.png")
    (shots / "loop2.png").symlink_to(shots / "loop1.png")
    looped = _predict([str(shots)], tmp_path / "out", model)
    assert looped.exit_code == 1 and "Traceback" not in looped.output, looped.output
    assert f"skipped {shots / 'loop1.png'}" in looped.output and (tmp_path / "out" / "a.png").is_file()
    unset = _predict([str(shots), ""], tmp_path / "out2", model)  # "$PHOTOS" of an unset variable
    assert unset.exit_code == 2 and "input 2 of 2 is empty (an unset shell variable?)" in unset.output
    no_out = runner.invoke(app, ["predict", str(shots / "a.png"), "-o", "", "--model", model])
    assert no_out.exit_code == 2 and "-o is empty (an unset shell variable?)" in no_out.output
    # -o a file name: before, a folder restored.png/ holding a.png; an existing folder of that name is one
    file_out = _predict([str(shots / "a.png")], tmp_path / "restored.png", model)
    assert file_out.exit_code == 2 and "looks like an image file, but -o names a folder" in file_out.output
    assert not (tmp_path / "restored.png").exists()
    slash = runner.invoke(app, ["predict", str(shots / "a.png"), "-o", f"{tmp_path / 'new.png'}/", "--model", model,
                                "--device", "cpu", "--tile", "32", "--overlap", "8"])  # a trailing / names a folder
    assert slash.exit_code == 0 and (tmp_path / "new.png" / "a.png").is_file(), slash.output
    (tmp_path / "odd.png").mkdir()
    assert _predict([str(shots / "a.png")], tmp_path / "odd.png", model, "--format", "jpeg").exit_code == 0
    assert (tmp_path / "odd.png" / "a.jpg").is_file()  # jpeg: jpg by its other name, as serve takes it
    assert not (tmp_path / "out2").exists()


def test_a_folder_that_cannot_be_listed_is_reported_not_passed_over(tmp_path, model, monkeypatch):
    write_png(tmp_path / "in" / "a.png", np.zeros((20, 20, 3), np.uint8))
    write_png(tmp_path / "in" / "locked" / "b.png", np.zeros((20, 20, 3), np.uint8))
    listing = os.scandir

    def scandir(path="."):  # as a folder of mode 000 answers anyone but root
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return listing(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = _predict([str(tmp_path / "in")], tmp_path / "out", model)
    assert result.exit_code == 1, result.output
    assert f"skipped folder {tmp_path / 'in' / 'locked'}: cannot be listed" in result.output
    assert "restored 1 of 1 images (1 of the inputs named no image)" in result.output


def _pairs(folder: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    rng = np.random.default_rng(0)
    for name, (h, w) in sizes.items():
        write_png(folder / "clean" / f"{name}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        write_png(folder / "moire" / f"{name}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return folder


def test_quiet_synth_report_runs_and_skipped_pairs_exit_1(tmp_path):
    pairs = _pairs(tmp_path / "pairs", {"a": (40, 40), "b": (40, 40)})
    (pairs / "moire" / "c.png").write_bytes(b"not a png")
    write_png(pairs / "clean" / "c.png", np.zeros((40, 40, 3), np.uint8))
    result = runner.invoke(app, ["-q", "synth-report", "--pairs", str(pairs), "--out", str(tmp_path / "report")])
    assert result.exit_code == 1, result.output  # -q gave an AttributeError: its spinner was None
    assert "skipped pairs/c.png" in result.output and (tmp_path / "report" / "summary.json").is_file()
    (pairs / "moire" / "c.png").unlink()
    (pairs / "clean" / "c.png").unlink()
    result = runner.invoke(app, ["-q", "synth-report", "--pairs", str(pairs), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output


def _one_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_calibrate_refuses_a_file_as_base_and_a_layout_the_folder_is_not_before_any_work(tmp_path):
    pairs = _pairs(tmp_path / "pairs", {"a": (40, 40)})
    preset = tmp_path / "mine.yaml"
    preset.write_text("base: default\n")
    out = tmp_path / "c.yaml"
    line = _one_error(runner.invoke(app, ["calibrate", "--real", str(pairs), "--out", str(out), "--base",
                                          str(preset)]))
    assert f"base = '{preset}': choose a built-in preset (default, " in line and "a preset file cannot be a base" in line
    # a generic moire/ + clean/ folder is not FHDMi's layout: no fit on its ground truths as if they were photos
    line = _one_error(runner.invoke(app, ["calibrate", "--real", str(pairs), "--out", str(out), "--layout", "fhdmi"]))
    assert "fhdmi" in line
    photo = pairs / "moire" / "a.png"
    line = _one_error(runner.invoke(app, ["calibrate", "--real", str(photo), "--out", str(out)]))
    assert line == f"error: --real {photo} is a file: name the folder that holds the photos (--include picks some of them)"
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer where no CUDA device is")
def test_bench_synth_on_a_missing_gpu_is_one_line():
    line = _one_error(runner.invoke(app, ["bench", "synth", "--size", "64", "--device", "cuda", "--repeats", "1"]))
    assert line == "error: device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'"


def test_report_refuses_a_grid_that_is_not_a_png(tmp_path):
    grid = tmp_path / "grid.png"
    grid.write_text("hello, not a png")
    args = ["report", "-o", str(tmp_path / "r.html"), "--grid", str(grid)]
    for option, text in (("metrics", "{}"), ("history", "epoch,train_loss,val_loss,val_psnr\n1,0.1,0.1,20\n"),
                         ("registration", "{}")):
        path = tmp_path / f"{option}.{'csv' if option == 'history' else 'json'}"
        path.write_text(text)
        args += [f"--{option}", str(path)]
    assert _one_error(runner.invoke(app, args)) == f"error: {grid} is not a PNG image; `dvc repro evaluate` writes the grid"
    assert not (tmp_path / "r.html").exists()


def test_report_replaces_its_own_report_and_nothing_else_unless_asked(tmp_path, monkeypatch, rng):
    from tests.evaluation.test_run_report import _run_outputs

    monkeypatch.chdir(tmp_path)
    _run_outputs(tmp_path, rng)
    assert runner.invoke(app, ["report", "-o", "r.html"]).exit_code == 0
    assert runner.invoke(app, ["report", "-o", "r.html"]).exit_code == 0  # its own report: replaced
    Path("notes.html").write_text("my notes")
    line = _one_error(runner.invoke(app, ["report", "-o", "notes.html"]))
    assert line == "error: notes.html exists and is not a report demoire wrote; choose another -o or pass --overwrite"
    assert Path("notes.html").read_text() == "my notes"
    assert runner.invoke(app, ["report", "-o", "notes.html", "--overwrite"]).exit_code == 0
    metrics = Path("data/evaluate/metrics.json")
    before = metrics.read_bytes()
    for flags in ([], ["--overwrite"]):  # never over one of its inputs
        line = _one_error(runner.invoke(app, ["report", "-o", str(metrics), *flags]))
        assert line == f"error: -o {metrics} is one of the report's inputs; choose another file"
    assert metrics.read_bytes() == before


def test_served_and_exported_images_keep_their_pixels(tmp_path, model):
    """The control for the skips above: an ordinary image goes through every format unchanged in size."""
    write_png(tmp_path / "a.png", np.zeros((20, 30, 3), np.uint8))
    for fmt in ("png", "jpg", "webp"):
        result = _predict([str(tmp_path / "a.png")], tmp_path / fmt, model, "--format", fmt)
        assert result.exit_code == 0, result.output
        assert read_rgb(tmp_path / fmt / f"a.{fmt}").shape == (20, 30, 3)


def test_a_folder_model_is_described_with_every_documented_key(model):
    from pipeline.model_source import describe_model
    from pipeline.models import load_model

    net, spec = load_model(Path(model))
    info = describe_model(model, net, spec)
    assert {key: info[key] for key in ("version", "alias", "run_id", "promotion", "last_promote", "metrics")} == {
        "version": None, "alias": None, "run_id": None, "promotion": None, "last_promote": None, "metrics": {}}
    assert (info["architecture"], info["format"], info["name"]) == ("unet", "pytorch", "model")


def test_bracketed_names_are_shown_as_given_never_parsed_as_console_markup(tmp_path, model):
    # rich read "[/x]" (here folders "set[" and "x]") as a closing tag (a MarkupError traceback) and "[bold]" as a
    # style (the text vanished)
    pairs = _pairs(tmp_path / "set[" / "x]", {"a[draft]": (40, 40)})
    (pairs / "moire" / "b[bold].png").write_bytes(b"not a png")
    write_png(pairs / "clean" / "b[bold].png", np.zeros((40, 40, 3), np.uint8))
    result = runner.invoke(app, ["synth-report", "--pairs", str(pairs), "--out", str(tmp_path / "report")])
    assert result.exit_code == 1, result.output
    assert "skipped x]/b[bold].png" in result.output and str(pairs) in result.output
    result = _predict([str(pairs / "moire" / "b[bold].png")], tmp_path / "out[draft]", model)
    assert result.exit_code == 1 and f"skipped {pairs / 'moire' / 'b[bold].png'}: cannot read image" in result.output
    result = runner.invoke(app, ["evaluate", "--model", model, "--pairs", str(tmp_path / "none[" / "x]")])
    assert _one_error(result) == f"error: dataset folder not found: {tmp_path / 'none[' / 'x]'}"


def test_a_missing_extra_names_the_pip_extra_with_its_brackets(monkeypatch, capsys):
    import pipeline.cli as cli

    def needs_onnx() -> None:
        raise ModuleNotFoundError("No module named 'onnx'", name="onnx")

    monkeypatch.setattr(cli, "app", needs_onnx)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: this command needs onnx, which is not installed: "
                                               "pip install 'demoire[export]'")


def test_serve_without_the_upload_parser_stops_before_loading_and_names_the_extra(model, monkeypatch):
    import sys

    # a base install: MLflow brings fastapi and uvicorn, so only the page's multipart uploads failed, each a 500
    monkeypatch.setitem(sys.modules, "python_multipart", None)
    result = runner.invoke(app, ["serve", "--model", model, "--port", "1"])
    assert isinstance(result.exception, ModuleNotFoundError) and result.exception.name == "python_multipart"
    assert "loading" not in result.output
