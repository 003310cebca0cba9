import json
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import pandas as pd
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.evaluation.metrics import MAX_PSNR_DB
from pipeline.cli.common import infer_params
from pipeline.inference import restore_image
from pipeline.io import read_rgb, write_png
from pipeline.models import ModelSpec, build_model, load_model, save_model

runner = CliRunner()


def _model(tmp_path):
    spec = ModelSpec("unet", 8, 2)
    save_model(build_model(spec), spec, tmp_path / "model")
    return str(tmp_path / "model")


def test_check_params_reports_bad_key(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  lr: 0\n")
    result = runner.invoke(app, ["check-params", "--params", str(params)])
    assert result.exit_code == 2
    assert "train.lr = 0: Input should be greater than 0" in result.output


@pytest.mark.parametrize("written, message", [
    ("synthesize: {n_pairs: 2}\n", "synthesize.n_pairs = 2: the preprocess stage needs a pair in each of train, val "
                                   "and test; allowed: 3 or more"),
    ("synthesize: {sources: {bundled: false, procedural: 2}}\n",
     "synthesize.sources.procedural = 2: with bundled false and no folders, the preprocess stage cannot split fewer "
     "than 3 source images"),
])
def test_check_params_refuses_synthetic_data_the_preprocess_stage_cannot_split(tmp_path, written, message):
    params = tmp_path / "params.yaml"
    params.write_text(written)
    result = runner.invoke(app, ["check-params", "--params", str(params)])
    assert result.exit_code == 2 and message in result.output, result.output
    datasets = ", ".join(f"{{path: {tmp_path}, split: {split}}}" for split in ("train", "val", "test"))
    params.write_text(written + f"preprocess: {{synthetic: false, datasets: [{datasets}]}}\n")
    assert runner.invoke(app, ["check-params", "--params", str(params)]).exit_code == 0  # nothing synthetic to split


@pytest.mark.parametrize("written, key", [
    ("synthesize: {sources: {folders: [photos]}}\n", "synthesize.sources.folders[0] = 'photos'"),
    ("preprocess: {datasets: [{path: fhdmi, split: test}]}\n", "preprocess.datasets[0].path = 'fhdmi'"),
    ("evaluate: {real_sets: [{name: r, path: real}]}\n", "evaluate.real_sets[0].path = 'real'"),
])
def test_check_params_names_a_folder_that_is_not_there_relative_to_the_params_file(tmp_path, written, key):
    params = tmp_path / "params.yaml"
    params.write_text(written)
    result = runner.invoke(app, ["check-params", "--params", str(params)])
    folder = key.split("'")[1]
    assert result.exit_code == 2 and f"{key}: no such folder ({tmp_path / folder})" in result.output, result.output
    (tmp_path / folder).mkdir()
    assert runner.invoke(app, ["check-params", "--params", str(params)]).exit_code == 0


def test_mlflow_s_download_bar_is_off_where_no_terminal_would_show_it(tmp_path, monkeypatch):
    # the CLI under a runner (stderr is no terminal), and a flow's process whose stderr goes to a log
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "unset")  # so that the undo removes what the CLI sets
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    # a bar asked for (DEMOIRE_PROGRESS=bar): MLflow's stays as well
    monkeypatch.setenv("DEMOIRE_PROGRESS", "bar")
    runner.invoke(app, ["check-params", "--params", str(tmp_path / "params.yaml")])
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ
    monkeypatch.delenv("DEMOIRE_PROGRESS")
    runner.invoke(app, ["check-params", "--params", str(tmp_path / "params.yaml")])
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    code = "import flows, os; print(os.environ['MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR'])"
    flows = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                           text=True, timeout=120,
                           env={k: v for k, v in os.environ.items()
                                if k not in ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "DEMOIRE_PROGRESS")})
    assert flows.stdout.strip() == "false", flows.stderr[-500:]


def test_predict_takes_files_folders_and_globs_skips_bad_images_and_never_overwrites(tmp_path, rng):
    model = _model(tmp_path)
    inputs, loose, out = tmp_path / "in", tmp_path / "loose", tmp_path / "out"
    write_png(inputs / "a.png", rng.integers(0, 256, (31, 45, 3), dtype=np.uint8))
    write_png(inputs / "sub" / "c.png", rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    write_png(inputs / "x.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    write_png(inputs / "big.png", rng.integers(0, 256, (50, 60, 3), dtype=np.uint8))  # over --max-pixels
    (inputs / "b.png").write_bytes(b"broken")
    write_png(inputs / "cut.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    (inputs / "cut.png").write_bytes((inputs / "cut.png").read_bytes()[:300])
    write_png(loose / "x.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))  # same output name as in/x.png
    write_png(loose / "y.jpg", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))  # not matched by *.png
    write_png(tmp_path / "single.png", rng.integers(0, 256, (24, 70, 3), dtype=np.uint8))
    args = ["--model", model, "--device", "cpu", "--tile", "32", "--overlap", "8", "--max-pixels", "2500"]
    # The glob is passed quoted, as a shell that did not expand it would.
    result = runner.invoke(app, ["predict", str(inputs), str(loose / "*.png"), str(tmp_path / "single.png"),
                                 str(tmp_path / "missing.png"), "-o", str(out), *args])
    assert result.exit_code == 1, result.output
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["a.png", "single.png", "sub/c.png", "x.png"]
    assert read_rgb(out / "a.png").shape == (31, 45, 3) and read_rgb(out / "single.png").shape == (24, 70, 3)
    net = load_model(Path(model))[0]
    single = read_rgb(tmp_path / "single.png")  # 70 wide: restored in tiles of 32
    np.testing.assert_array_equal(read_rgb(out / "single.png"), restore_image(net, single, "cpu", 32, 8))
    assert f"skipped {inputs / 'b.png'}: cannot read image" in result.output
    assert f"skipped {inputs / 'cut.png'}: cannot read image from {inputs / 'cut.png'}: image file is truncated" in result.output
    assert (f"skipped {inputs / 'big.png'}: image from {inputs / 'big.png'} is 60x50 = 3,000 pixels, "
            "over the limit of 2,500 (infer.max_pixels, or --max-pixels)") in result.output
    assert f"skipped {loose / 'x.png'}: {out / 'x.png'} written earlier in this run from another input" in result.output
    assert f"skipped {tmp_path / 'missing.png'}: no such file or folder" in result.output
    assert re.search(r"restored 4 of 8 images \(1 of the inputs named no image\) in [0-9.]+ s, median [0-9.]+ s per "
                     r"image", result.output)

    before = (out / "a.png").read_bytes()
    write_png(inputs / "a.png", rng.integers(0, 256, (31, 45, 3), dtype=np.uint8))
    result = runner.invoke(app, ["predict", str(inputs / "a.png"), "-o", str(out), *args])
    assert result.exit_code == 1 and f"skipped {inputs / 'a.png'}: {out / 'a.png'} exists (use --overwrite)" in result.output
    assert (out / "a.png").read_bytes() == before
    result = runner.invoke(app, ["predict", str(inputs / "a.png"), "-o", str(out), *args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (out / "a.png").read_bytes() != before and "restored 1 of 1 images" in result.output


def test_predict_takes_tile_settings_from_a_params_file_and_rejects_bad_ones(tmp_path, rng):
    model = _model(tmp_path)
    write_png(tmp_path / "in" / "a.png", rng.integers(0, 256, (30, 30, 3), dtype=np.uint8))
    params = tmp_path / "params.yaml"
    params.write_text("infer:\n  max_pixels: 899\n")
    result = runner.invoke(app, ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", model,
                                 "--params", str(params)])
    assert result.exit_code == 1 and "30x30 = 900 pixels, over the limit of 899" in result.output
    bad = runner.invoke(app, ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", model,
                              "--tile", "64", "--overlap", "32"])
    assert bad.exit_code == 2 and "error: --overlap 32 must be less than half of --tile 64\n" in bad.output
    mixed = runner.invoke(app, ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", model,
                                "--params", str(params), "--overlap", "300"])  # tile_size from params.yaml
    assert mixed.exit_code == 2
    assert f"error: {params}: infer: --overlap 300 must be less than half of tile_size 512" in mixed.output
    small = runner.invoke(app, ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", model,
                                "--tile", "16"])
    assert small.exit_code == 2 and "error: --tile 16: Input should be greater than or equal to 32" in small.output


def test_predict_and_evaluate_restore_larger_photos_at_max_side_and_0_restores_at_full_size(tmp_path, rng):
    model = _model(tmp_path)
    net = load_model(Path(model))[0]
    photo = rng.integers(0, 256, (48, 100, 3), dtype=np.uint8)
    write_png(tmp_path / "in" / "a.png", photo)
    (tmp_path / "params.yaml").write_text("infer:\n  max_side: 64\n")
    by_option_or_params = {"option": ["--max-side", "64"], "params": ["--params", str(tmp_path / "params.yaml")]}
    for name, options in by_option_or_params.items():
        result = runner.invoke(app, ["predict", str(tmp_path / "in"), "-o", str(tmp_path / name), "--model", model,
                                     "--device", "cpu", *options])
        assert result.exit_code == 0, result.output
        shrunk = restore_image(net, photo, "cpu", max_side=64, falloff=0.5)
        np.testing.assert_array_equal(read_rgb(tmp_path / name / "a.png"), shrunk)
    full = runner.invoke(app, ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "full"), "--model", model,
                               "--device", "cpu", "--params", str(tmp_path / "params.yaml"), "--max-side", "0"])
    assert full.exit_code == 0, full.output
    np.testing.assert_array_equal(read_rgb(tmp_path / "full" / "a.png"), restore_image(net, photo, "cpu", falloff=0.5))
    assert not np.array_equal(read_rgb(tmp_path / "option" / "a.png"), read_rgb(tmp_path / "full" / "a.png"))
    bad = runner.invoke(app, ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "bad"), "--model", model,
                              "--max-side", "8"])
    assert bad.exit_code == 2 and not (tmp_path / "bad").exists()
    assert "--max-side 8: allowed: 64 to 65536, or 0 for full size" in bad.output

    write_png(tmp_path / "pairs" / "clean" / "a.png", photo)
    write_png(tmp_path / "pairs" / "moire" / "a.png", photo // 2 + 40)
    scores = {}
    for side in (0, 64):
        options = ["--max-side", str(side)]
        result = runner.invoke(app, ["evaluate", "--model", model, "--pairs", str(tmp_path / "pairs"), "--json",
                                     "--device", "cpu", *options])
        assert result.exit_code == 0, result.output
        scores[side] = json.loads(result.stdout.strip().splitlines()[-1])["psnr"]
    moire = read_rgb(tmp_path / "pairs" / "moire" / "a.png")
    shrunk = restore_image(net, moire, "cpu", max_side=64, falloff=0.5).astype(float)
    expected = 10 * np.log10(255.0**2 / ((shrunk - photo.astype(float)) ** 2).mean())
    assert scores[64] == pytest.approx(expected, abs=1e-3) and scores[64] != pytest.approx(scores[0], abs=1e-3)


def test_predict_and_evaluate_undo_the_falloff_share_of_the_option_or_the_params(tmp_path):
    model = _model(tmp_path)
    net = load_model(Path(model))[0]
    y, x = np.mgrid[:60, :90]
    page = np.where((y // 6) % 3 == 0, 40.0, 220.0)  # lines of "text"
    darkened = page * (1 - 0.3 * ((x - 45) ** 2 + (y - 30) ** 2) / (45**2 + 30**2))
    photo = np.repeat(darkened.astype(np.uint8)[..., None], 3, axis=2)  # darker towards its corners
    write_png(tmp_path / "in" / "a.png", photo)
    (tmp_path / "params.yaml").write_text("infer:\n  falloff: 0.25\n")
    runs = {"none": ["--falloff", "0"], "all": ["--falloff", "1"],
            "params": ["--params", str(tmp_path / "params.yaml")]}
    for name, options in runs.items():
        result = runner.invoke(app, ["predict", str(tmp_path / "in"), "-o", str(tmp_path / name), "--model", model,
                                     "--device", "cpu", *options])
        assert result.exit_code == 0, result.output
    share = {"none": 0.0, "all": 1.0, "params": 0.25}
    outputs = {name: read_rgb(tmp_path / name / "a.png") for name in runs}
    for name, output in outputs.items():
        np.testing.assert_array_equal(output, restore_image(net, photo, "cpu", falloff=share[name]))
    assert len({output.tobytes() for output in outputs.values()}) == 3
    bad = runner.invoke(app, ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "bad"), "--model", model,
                              "--falloff", "2"])
    assert bad.exit_code == 2 and "--falloff" in bad.output and not (tmp_path / "bad").exists()

    write_png(tmp_path / "pairs" / "clean" / "a.png", page.astype(np.uint8)[..., None].repeat(3, 2))
    write_png(tmp_path / "pairs" / "moire" / "a.png", photo)
    scores = {}
    for share_given in ("0", "1"):
        result = runner.invoke(app, ["evaluate", "--model", model, "--pairs", str(tmp_path / "pairs"), "--json",
                                     "--device", "cpu", "--falloff", share_given])
        assert result.exit_code == 0, result.output
        scores[share_given] = json.loads(result.stdout.strip().splitlines()[-1])["psnr"]
    undone = restore_image(net, photo, "cpu", falloff=1.0).astype(float)
    expected = 10 * np.log10(255.0**2 / ((undone - page[..., None]) ** 2).mean())
    assert scores["1"] == pytest.approx(expected, abs=1e-3) and scores["1"] != pytest.approx(scores["0"], abs=1e-3)


def test_predict_reports_progress_through_the_project_reporter_unless_quiet(tmp_path, rng, monkeypatch, caplog):
    import logging

    model = _model(tmp_path)
    for name in ("a.png", "b.png"):
        write_png(tmp_path / "in" / name, rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    monkeypatch.setenv("DEMOIRE_PROGRESS", "log")  # as off a terminal: log lines, not a bar
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        quiet = runner.invoke(app, ["-q", "predict", str(tmp_path / "in"), "-o", str(tmp_path / "q"), "--model", model])
        shown = runner.invoke(app, ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", model])
    assert quiet.exit_code == 0 and shown.exit_code == 0, quiet.output + shown.output
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.progress"]
    assert len(lines) == 1 and lines[0].startswith("restoring: 2/2 images (100%)")


def test_evaluate_json_on_paired_folder(tmp_path, rng):
    model = _model(tmp_path)
    for name in ("x.png", "y.png"):
        clean = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        write_png(tmp_path / "pairs" / "clean" / name, clean)
        write_png(tmp_path / "pairs" / "moire" / name, clean // 2)
    result = runner.invoke(app, ["evaluate", "--model", model, "--pairs", str(tmp_path / "pairs"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["count"] == 2
    assert set(summary) >= {"psnr", "ssim", "mse", "identity_psnr", "identity_ssim", "identity_mse"}


def test_missing_model_is_one_line(tmp_path):
    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "none"), "--pairs", str(tmp_path)])
    assert result.exit_code == 2
    assert "no model in" in result.output


def test_synthesize_writes_matching_pairs_whatever_the_worker_count(tmp_path):
    args = ["synthesize", "--preset", "document", "--n", "4", "--size", "48", "--seed", "3"]
    one = runner.invoke(app, [*args, "--out", str(tmp_path / "one"), "--gallery", "2"])
    two = runner.invoke(app, [*args, "--out", str(tmp_path / "two"), "--workers", "2"])
    assert one.exit_code == 0 and two.exit_code == 0, one.output + two.output
    names = sorted(p.name for p in (tmp_path / "one" / "moire").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "one" / "clean").iterdir()) and len(names) == 4
    for sub in ("moire", "clean"):
        for name in names:
            assert (tmp_path / "one" / sub / name).read_bytes() == (tmp_path / "two" / sub / name).read_bytes()
    manifest = pd.read_parquet(tmp_path / "one" / "manifest.parquet")
    assert manifest.source_kind.eq("procedural").all() and "exposure_ev" in manifest
    assert read_rgb(tmp_path / "one-gallery.png").shape == (20 + 2 * 48, 2 * 48, 3)

    again = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert again.exit_code == 2 and "exists; choose another --out or pass --overwrite" in again.output
    # a real paired set in the generic layout (moire/ and clean/) is no synthetic set: before, --overwrite deleted it
    real = tmp_path / "real"
    for sub in ("moire", "clean"):
        write_png(real / sub / "IMG_0001.png", np.zeros((8, 8, 3), np.uint8))
    kept = runner.invoke(app, [*args, "--out", str(real), "--overwrite"])
    assert kept.exit_code == 2 and f"{real} holds more than a synthetic set (moire/IMG_0001.png, clean/IMG_0001.png)" \
        in kept.output, kept.output
    assert sorted(p.relative_to(real).as_posix() for p in real.rglob("*.png")) == ["clean/IMG_0001.png",
                                                                                     "moire/IMG_0001.png"]
    write_png(tmp_path / "one" / "moire" / "extra.png", np.zeros((8, 8, 3), np.uint8))  # a file added to a set
    assert "holds more than a synthetic set (moire/extra.png)" in runner.invoke(
        app, [*args, "--out", str(tmp_path / "one"), "--overwrite"]).output
    (tmp_path / "one" / "moire" / "extra.png").unlink()
    (tmp_path / "one" / "moire" / ".DS_Store").write_bytes(b"Bud1")  # a file browser's, in a set it showed
    (tmp_path / "one" / "clean" / "Thumbs.db").write_bytes(b"")
    replaced = runner.invoke(app, [*args, "--out", str(tmp_path / "one"), "--overwrite", "--seed", "4"])
    assert replaced.exit_code == 0 and pd.read_parquet(tmp_path / "one" / "manifest.parquet").shape[0] == 4
    # an existing gallery is refused before anything is rendered, not after
    (tmp_path / "three-gallery.png").write_bytes(b"a gallery kept")
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "three"), "--gallery", "2"])
    assert refused.exit_code == 2 and f"{tmp_path / 'three-gallery.png'} exists (use --overwrite" in refused.output
    assert not (tmp_path / "three").exists()


def test_synthesize_with_a_layer_bank_writes_the_same_bytes_whatever_the_worker_count(tmp_path):
    args = ["synthesize", "--n", "6", "--size", "48", "--seed", "3", "--layer-bank", "2"]
    one = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    two = runner.invoke(app, [*args, "--out", str(tmp_path / "two"), "--workers", "2"])
    assert one.exit_code == 0 and two.exit_code == 0, one.output + two.output
    for sub in ("moire", "clean"):
        for path in sorted((tmp_path / "one" / sub).iterdir()):
            assert path.read_bytes() == (tmp_path / "two" / sub / path.name).read_bytes()
    manifest = pd.read_parquet(tmp_path / "one" / "manifest.parquet")
    assert set(manifest.layer_slot) <= {0, 1} and manifest.layer_orientation.between(0, 7).all()
    assert manifest.groupby("layer_slot").distance_mm.nunique().eq(1).all()  # a slot is one geometry


def test_synthesize_rejects_unknown_preset_in_one_line(tmp_path):
    result = runner.invoke(app, ["synthesize", "--preset", "wavy", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert ("error: --preset 'wavy': preset 'wavy' is neither a built-in preset (default, fine, coarse, "
            "document, classic) nor a preset file (.yaml or .yml)") in result.output
    assert not (tmp_path / "x").exists()


def test_bench_synth_json_reports_pairs_per_core(monkeypatch):
    loads = iter([(1.5, 1.0, 1.0)])  # the load before the run; the run itself then raises it to 9
    monkeypatch.setattr(os, "getloadavg", lambda: next(loads, (9.0, 9.0, 9.0)))
    result = runner.invoke(app, ["bench", "synth", "--size", "64", "--pairs", "2", "--repeats", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pairs_per_s_per_core"] > 0 and len(report["runs"]) == 2 and report["size"] == 64
    assert report["pairs_per_s_per_core"] == statistics.median(report["runs"])
    assert report["pairs_per_cpu_s"] == statistics.median(report["cpu_runs"]) and len(report["cpu_runs"]) == 2
    assert report["png_encoding"] is False
    # the machine named as the docs compare machines: the CPU's name and vector unit, not `x86_64`
    cpu = report["machine"]
    cpuinfo = Path("/proc/cpuinfo")
    named = cpuinfo.is_file() and "model name" in cpuinfo.read_text()  # ARM's lists no name
    assert cpu["cpu"] != cpu["arch"] or not named
    assert cpu["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert cpu["cores"] == os.cpu_count() and cpu["load_1min"] == 1.5


def test_bench_synth_encode_encodes_both_images_of_every_pair(monkeypatch):
    import pipeline.bench

    encoded = []
    monkeypatch.setattr(pipeline.bench, "save_png", lambda image, target: encoded.append(image.shape))
    result = runner.invoke(app, ["bench", "synth", "--size", "48", "--pairs", "2", "--repeats", "2", "--encode"])
    assert result.exit_code == 0, result.output
    assert encoded == [(48, 48, 3)] * 8  # 2 runs × 2 pairs × (moiré, clean); the warm-up pair is not encoded
    assert "PNGs encoded" in result.stdout


def test_check_params_show_resolves_the_preset(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("synthesize:\n  preset: coarse\n")
    result = runner.invoke(app, ["check-params", "--params", str(params), "--show"])
    assert result.exit_code == 0
    assert "beat_period_px:\n    - 40.0\n    - 250.0" in result.stdout  # the coarse preset's periods


@pytest.mark.parametrize("model", ["simple", "unet", "mscale"])
def test_bench_train_json_reports_images_per_second(model):
    result = runner.invoke(app, ["bench", "train", "--model", model, "--device", "cpu", "--size", "32",
                                 "--batch", "2", "--steps", "1", "--repeats", "2", "--channels", "8", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == model and report["size"] == "32x32" and report["amp"] == "off"
    assert report["images_per_s"] > 0 and len(report["runs"]) == 2
    assert report["achieved_tflops"] == pytest.approx(6 * report["gmac_per_image"] * report["images_per_s"] / 1000)


@pytest.mark.parametrize("tiling, tiles", [(["--tile", "0"], 1), (["--tile", "64", "--overlap", "16"], 4)])
def test_bench_infer_json_reports_latency_and_memory_of_a_wide_frame(tiling, tiles):
    result = runner.invoke(app, ["bench", "infer", "--model", "mscale", "--device", "cpu", "--size", "160x40",
                                 "--repeats", "1", "--channels", "8", *tiling, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["size"] == "160x40" and report["ms_per_frame"] > 0 and report["peak_memory_mb"] > 100
    assert report["gmac_per_image"] > 0 and report["parameters"] > 0
    assert report["tiles"] == tiles and report["tile_size"] == int(tiling[1])


def test_bench_rejects_a_malformed_size_and_an_unknown_model():
    bad_size = runner.invoke(app, ["bench", "infer", "--size", "4k"])
    assert bad_size.exit_code == 2 and "--size = '4k': give a side (256) or WIDTHxHEIGHT" in bad_size.output
    bad_model = runner.invoke(app, ["bench", "train", "--model", "esdnet", "--device", "cpu"])
    assert bad_model.exit_code == 2 and "'esdnet' is not one of 'simple', 'unet', 'mscale'" in bad_model.output  # a choice
    bad_tile = runner.invoke(app, ["bench", "infer", "--model", "mscale", "--channels", "8", "--tile", "40",
                                    "--overlap", "16", "--device", "cpu", "--size", "64"])
    assert bad_tile.exit_code == 2 and "use a tile of at least 48" in bad_tile.output
    shallow = runner.invoke(app, ["bench", "infer", "--device", "cpu", "--size", "48", "--channels", "4",
                                  "--depth", "1"])
    assert shallow.exit_code == 2 and shallow.output.strip() == "error: --depth = 1: the unet model takes 2 to 5 levels"


@pytest.mark.parametrize("args, message", [
    (["infer", "--size", "99999x99999"], "error: --size = '99999x99999': 99999x99999 = 9,999,800,001 pixels, over the "
     "limit of 100,000,000 (the default infer.max_pixels, the largest photo `predict` takes); choose a smaller size"),
    (["train", "--size", "4096"], "error: --size = '4096': 4096x4096 = 16,777,216 pixels, over the limit of "
     "4,194,304 (2048², the largest train.patch_size); choose a smaller size"),
    (["synth", "--size", "99999"], "error: --size 99999: Input should be less than or equal to 4096"),
], ids=["infer", "train", "synth"])
def test_bench_refuses_a_size_too_large_to_allocate_in_one_line_naming_the_limit(args, message):
    # `bench infer --size 99999x99999` asked for 30 GB and ended in a RuntimeError traceback
    result = runner.invoke(app, ["bench", *args, "--device", "cpu", "--repeats", "1"])
    assert result.exit_code == 2 and result.output.strip() == message, result.output


@pytest.fixture
def blocked_registry(tmp_path, monkeypatch):
    """v1 champion; v2 registered under a strict rule (10 dB margin), so the default rule would promote it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from pipeline.evaluation.gate import GateRule
    from pipeline.registry import log_demoire_model, register_and_gate, use_tracking_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    use_tracking_store(tmp_path, "test")
    model = _model(tmp_path)
    for psnr in (22.0, 22.5):
        with mlflow.start_run() as run:
            info = log_demoire_model(model)
        register_and_gate(MlflowClient(), "m", info.model_uri, run.info.run_id,
                          {"test_psnr": psnr, "test_ssim": 0.8, "test_mse": 0.01}, {"gate_set": "g"}, GateRule(10.0, 0.0))
    mlflow.set_tracking_uri(None)
    yield MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(None)  # it also sets MLFLOW_TRACKING_URI, which the CLI would then use


def _champion(client) -> str:
    return str(client.get_model_version_by_alias("m", "champion").version)


def test_promote_dry_run_then_promote_then_rollback(blocked_registry):
    client = blocked_registry
    tags_before = client.get_model_version("m", "2").tags

    dry = runner.invoke(app, ["promote", "--model-name", "m", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "┃ challenger ┃ champion ┃" in dry.output and "┃ v2         ┃ v1       ┃" in dry.output  # 2-line heads
    assert "+0.5000" in dry.output
    assert "dry run: champion would move to v2; nothing changed" in dry.output
    assert _champion(client) == "1" and client.get_model_version("m", "2").tags == tags_before

    done = runner.invoke(app, ["promote", "--model-name", "m"])
    assert done.exit_code == 0 and "champion: v1 → v2" in done.output, done.output
    assert _champion(client) == "2"
    tags = client.get_model_version("m", "2").tags  # the registration's decision stays; the promote's is added
    assert tags["promotion"] == "not_promoted" and tags["gate.margin_db"] == "10.0"
    assert client.get_model_version("m", "2").description.startswith("run ")
    assert [(e["promote"], e["margin_db"]) for e in json.loads(tags["promote.history"])] == [(True, 0.05)]

    again = runner.invoke(app, ["promote", "--model-name", "m"])
    assert again.exit_code == 0 and "v2 is already champion" in again.output

    back = runner.invoke(app, ["rollback", "--model-name", "m"])
    assert back.exit_code == 0 and "champion: v2 → v1" in back.output, back.output
    assert _champion(client) == "1"
    stays_out = runner.invoke(app, ["promote", "--model-name", "m"])  # the rolled-back challenger still beats v1
    assert stays_out.exit_code == 0 and _champion(client) == "1", stays_out.output
    assert ("keep champion: v2 was rolled back (champion moved back to v1) and stays out unless promoted with "
            "--allow-rolled-back; the gate alone says: beats champion v1") in stays_out.output
    none_left = runner.invoke(app, ["rollback", "--model-name", "m"])
    assert none_left.exit_code == 2
    assert none_left.output.strip() == "error: m has no previous champion to roll back to (champion history: v1)"
    forced = runner.invoke(app, ["promote", "--model-name", "m", "--allow-rolled-back"])
    assert forced.exit_code == 0 and "champion: v1 → v2" in forced.output and _champion(client) == "2"
    assert "rolled_back" not in client.get_model_version("m", "2").tags


def _remove_artifacts(client, version: str) -> None:
    """Delete a version's logged files, as a lost artifact store would."""
    import shutil
    from urllib.parse import urlsplit

    shutil.rmtree(urlsplit(client.get_model_version_download_uri("m", version)).path)


def test_a_rollback_killed_before_its_last_step_is_finished_by_running_it_again(blocked_registry, tmp_path):
    import subprocess
    import sys

    from pipeline.registry import champion_history

    client = blocked_registry
    assert runner.invoke(app, ["promote", "--model-name", "m"]).exit_code == 0 and _champion(client) == "2"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "DEMOIRE_KILL_AT": "rollback.history_written"}
    killed = subprocess.run([sys.executable, "-m", "pipeline.cli", "rollback", "--model-name", "m"], env=env,
                            cwd=tmp_path, capture_output=True, text=True)
    assert killed.returncode == -9 and _champion(client) == "2"  # killed with the alias not yet moved
    assert champion_history(client, "m") == ["1", "2"]  # the stored history ends with v1, the alias adds v2
    again = runner.invoke(app, ["rollback", "--model-name", "m"])
    assert again.exit_code == 0 and "champion: v2 → v1" in again.output, again.output
    assert _champion(client) == "1" and champion_history(client, "m") == ["1"]
    assert client.get_model_version("m", "2").tags["rolled_back"] == "champion moved back to v1"


def test_champion_never_moves_to_a_version_whose_files_are_gone(blocked_registry):
    client = blocked_registry
    _remove_artifacts(client, "2")
    tags_before = client.get_model_version("m", "2").tags
    refused = runner.invoke(app, ["promote", "--model-name", "m"])
    assert refused.exit_code == 2 and _champion(client) == "1"
    assert refused.output.strip().splitlines()[-1].startswith(
        "error: moving champion to v2 refused: m v2: its model files cannot be read (")
    assert client.get_model_version("m", "2").tags == tags_before  # nothing decided: a later promote decides afresh
    client.set_registered_model_alias("m", "champion", "2")  # moved by hand; its rollback target is fine
    _remove_artifacts(client, "1")
    back = runner.invoke(app, ["rollback", "--model-name", "m"])
    assert back.exit_code == 2 and _champion(client) == "2"
    assert back.output.strip().splitlines()[-1].startswith(
        "error: rolling back to v1 refused: m v1: its model files cannot be read (")


def _registration_died_before_applying(client, version: str) -> None:
    """As if the version's registration had recorded "promote" and died before applying it."""
    from dataclasses import replace

    from pipeline.registry.promotion import DECISION_TAG, version_decision

    recorded = replace(version_decision(client, "m", version), promote=True, reason="the registration's gate")
    client.set_model_version_tag("m", version, DECISION_TAG, json.dumps(recorded.record()))
    client.delete_model_version_tag("m", version, "promotion")


def test_a_refused_promote_writes_nothing_even_where_a_registration_left_its_decision_unapplied(blocked_registry):
    client = blocked_registry
    _registration_died_before_applying(client, "2")
    _remove_artifacts(client, "2")
    before = client.get_model_version("m", "2")
    refused = runner.invoke(app, ["promote", "--model-name", "m"])
    assert refused.exit_code == 2 and _champion(client) == "1"
    assert refused.output.strip().splitlines()[-1].startswith("error: moving champion to v2 refused: m v2: ")
    after = client.get_model_version("m", "2")  # not "promoted" by finishing the registration's record
    assert (after.tags, after.description) == (before.tags, before.description)


def test_a_deleted_champion_is_stood_for_by_the_last_champion_that_exists(blocked_registry):
    client = blocked_registry
    assert runner.invoke(app, ["promote", "--model-name", "m"]).exit_code == 0 and _champion(client) == "2"
    client.delete_model_version("m", "2")  # the alias goes with it
    with pytest.raises(Exception):
        _champion(client)
    back = runner.invoke(app, ["rollback", "--model-name", "m", "--json"])
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout) == {"model_name": "m", "demoted": "2", "restored": "1"} and _champion(client) == "1"
    client.delete_registered_model_alias("m", "champion")  # removed by hand: rollback puts it back where it was
    back = runner.invoke(app, ["rollback", "--model-name", "m"])
    assert back.exit_code == 0 and "champion: none → v1" in back.output and _champion(client) == "1"


def _third_champion(client) -> None:
    """v3, with v2's files, made champion after v1 and v2: champion history v1, v2, v3."""
    from pipeline.registry import champion_history, move_champion

    second = client.get_model_version("m", "2")
    assert str(client.create_model_version("m", second.source, second.run_id).version) == "3"
    move_champion(client, "m", "2")
    move_champion(client, "m", "3")
    assert champion_history(client, "m") == ["1", "2", "3"]


def test_rollback_restores_the_champion_just_before_the_current_one(blocked_registry):
    from pipeline.registry import champion_history

    client = blocked_registry
    _third_champion(client)
    back = runner.invoke(app, ["rollback", "--model-name", "m"])
    assert back.exit_code == 0 and "champion: v3 → v2" in back.output, back.output
    assert _champion(client) == "2" and champion_history(client, "m") == ["1", "2"]


def test_a_deleted_champion_is_stood_for_by_the_latest_earlier_champion_not_the_first(blocked_registry):
    client = blocked_registry
    _third_champion(client)
    client.delete_model_version("m", "3")
    back = runner.invoke(app, ["rollback", "--model-name", "m", "--json"])
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout) == {"model_name": "m", "demoted": "3", "restored": "2"} and _champion(client) == "2"


def test_a_store_mlflow_cannot_use_is_one_line(blocked_registry, monkeypatch):
    for uri, says in [("bogus://x", "MLflow cannot use this store (UnsupportedModelRegistryStoreURIException: "),
                      ("postgresql://u:pw@127.0.0.1:1/x", "no database server answers at 127.0.0.1:1 (")]:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        result = runner.invoke(app, ["rollback", "--model-name", "m"])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert says in result.output and "pw" not in result.output


def test_promote_and_rollback_name_what_is_missing(blocked_registry, tmp_path, monkeypatch):
    for command in (["promote", "--dry-run"], ["rollback"]):  # a params file named and missing: not the defaults
        result = runner.invoke(app, [*command, "--model-name", "m", "--params", str(tmp_path / "nope.yaml")])
        assert result.exit_code == 2 and result.output.strip() == f"error: {tmp_path / 'nope.yaml'}: file not found"
    for command in (["promote"], ["promote", "--dry-run"], ["rollback"]):
        result = runner.invoke(app, [*command, "--model-name", "nope"])
        assert result.exit_code == 2
        assert result.output.strip().startswith("error: no registered model 'nope'")
        assert result.output.strip().endswith("registered models: m") and len(result.output.strip().splitlines()) == 1

    import mlflow

    mlflow.set_tracking_uri(None)
    monkeypatch.chdir(tmp_path / "model")
    result = runner.invoke(app, ["promote", "--model-name", "m"])
    assert result.exit_code == 2 and "no MLflow store at" in result.output and "`dvc repro` creates it" in result.output
    assert not (tmp_path / "model" / "mlflow.db").exists()
    # reading a registered model writes no store either (MLflow would create an empty one)
    for command in (["evaluate", "--pairs", str(tmp_path)], ["predict", str(tmp_path), "-o", str(tmp_path / "o")]):
        result = runner.invoke(app, [*command, "--model", "models:/m@champion"])
        assert result.exit_code == 2 and "no MLflow store at" in result.output, result.output
        assert not (tmp_path / "model" / "mlflow.db").exists()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there: one line, at once
    for command in (["promote", "--dry-run"], ["predict", str(tmp_path), "-o", str(tmp_path / "o"), "--model",
                                               "models:/m@champion"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2 and "http://127.0.0.1:9: no MLflow server answers" in result.output, result.output


def test_promote_rescores_on_the_local_test_split_when_gate_sets_differ(blocked_registry, tmp_path, rng):
    from pipeline.config import InferParams
    from pipeline.evaluation.gate import load_gate_set, scored_as
    from tests.test_registry import _gate_data

    client = blocked_registry
    data, pairs = _gate_data(tmp_path, rng)
    local = scored_as(load_gate_set(pairs, data).digest, InferParams())  # the test split restored as by default
    client.set_model_version_tag("m", "2", "gate_set", local)  # v1 stays on gate "g"
    result = runner.invoke(app, ["promote", "--model-name", "m", "--dry-run", "--data", str(data), "--pairs", str(pairs),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "re-scoring on the local test split (3 pairs" in result.output
    assert "champion v1 re-scored on this gate set" in " ".join(result.output.split()) and _champion(client) == "1"
    quiet = runner.invoke(app, ["-q", "promote", "--model-name", "m", "--dry-run", "--json", "--data", str(data),
                                "--pairs", str(pairs), "--device", "cpu"])
    assert quiet.exit_code == 0 and "re-scoring" not in quiet.output, quiet.output  # -q: errors only
    assert json.loads(quiet.stdout)["dry_run"] is True

    pairs.unlink()
    missing = runner.invoke(app, ["promote", "--model-name", "m", "--data", str(data), "--pairs", str(pairs)])
    assert missing.exit_code == 2 and "which is not here" in missing.output and "dvc repro" in missing.output


def _registration_record(client, version: str) -> tuple[dict, str]:
    """What the registration wrote on a version: its tags (a later promote's history and rollback's mark aside)
    and its description."""
    found = client.get_model_version("m", version)
    return {k: v for k, v in found.tags.items() if k not in ("promote.history", "rolled_back")}, found.description


def test_a_later_promote_keeps_the_registrations_decision_and_records_its_own(blocked_registry):
    from pipeline.registry import model_version_info
    from pipeline.registry.promotion import version_decision

    client = blocked_registry
    registered = _registration_record(client, "2")
    assert registered[0]["promotion"] == "not_promoted" and registered[0]["gate.margin_db"] == "10.0"
    done = runner.invoke(app, ["promote", "--model-name", "m", "--json"])
    assert done.exit_code == 0 and json.loads(done.stdout)["champion_after"] == "2", done.output
    assert _champion(client) == "2" and _registration_record(client, "2") == registered
    assert runner.invoke(app, ["rollback", "--model-name", "m"]).exit_code == 0
    stays_out = runner.invoke(app, ["promote", "--model-name", "m"])
    forced = runner.invoke(app, ["promote", "--model-name", "m", "--allow-rolled-back"])
    assert stays_out.exit_code == 0 and forced.exit_code == 0 and _champion(client) == "2", forced.output
    assert _registration_record(client, "2") == registered  # resume and reports read the registration's decision
    recorded = version_decision(client, "m", "2")
    assert (recorded.promote, recorded.rule.margin_db) == (False, 10.0)

    history = json.loads(client.get_model_version("m", "2").tags["promote.history"])
    assert [(entry["promote"], entry["champion_version"], entry["margin_db"]) for entry in history] == [
        (True, "1", 0.05), (False, "1", 0.05), (True, "1", 0.05)]
    assert "stays out unless promoted with --allow-rolled-back" in history[1]["reason"]
    assert all(entry["source"] == "demoire promote" and entry["at"].endswith("Z") for entry in history)
    assert "promote.history" not in client.get_model_version("m", "1").tags
    # what `demoire serve` answers on GET /model: the registration's decision, and the promote that made it champion
    served = model_version_info("models:/m@champion")
    assert (served["version"], served["promotion"]) == ("2", "not_promoted")
    assert served["last_promote"] == {key: history[-1][key] for key in ("at", "source", "promote", "reason")}
    assert model_version_info("models:/m/1")["last_promote"] is None


def test_the_promote_history_keeps_the_newest_decisions_within_mlflows_tag_limit(blocked_registry):
    from dataclasses import replace

    from pipeline.registry.promotion import (PROMOTE_HISTORY_TAG, TAG_VALUE_LIMIT, append_promote_entry,
                                             promote_entry, version_decision)

    client = blocked_registry
    decision = replace(version_decision(client, "m", "2"), promote=False)
    for number in range(12):
        entry = promote_entry(replace(decision, reason=f"decision {number}: " + "x" * 400), "demoire promote")
        append_promote_entry(client, "m", "2", entry)
    stored = client.get_model_version("m", "2").tags[PROMOTE_HISTORY_TAG]
    history = json.loads(stored)
    assert len(stored) <= TAG_VALUE_LIMIT == 5000 and 1 < len(history) < 12
    assert history[-1]["reason"].startswith("decision 11: ") and [int(e["reason"].split()[1][:-1]) for e in history] \
        == list(range(12 - len(history), 12))  # oldest dropped first
    alone_over = promote_entry(replace(decision, reason="y" * 9000), "demoire promote")
    append_promote_entry(client, "m", "2", alone_over)  # alone over the limit
    stored = client.get_model_version("m", "2").tags[PROMOTE_HISTORY_TAG]
    assert len(stored) <= TAG_VALUE_LIMIT and json.loads(stored)[-1]["reason"].startswith("yyy")
    assert json.loads(stored)[-1]["reason"].endswith("…") and _champion(client) == "1"


def _database_locked(*args):
    """Raise what MLflow raises for SQLite's "database is locked": a store error worth another try."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    raise MlflowException("database is locked", error_code=TEMPORARILY_UNAVAILABLE)


def _store_stops_after_moving_champion(monkeypatch) -> Callable[[], None]:
    """Make `demoire promote` move champion, then find the store locked; returns what puts the store back."""
    import pipeline.registry.promotion as promotion

    move_champion = promotion.move_champion

    def then_locked(*args):
        move_champion(*args)
        _database_locked()

    monkeypatch.setattr(promotion, "move_champion", then_locked)
    return lambda: monkeypatch.setattr(promotion, "move_champion", move_champion)


def _store_stopped_line(command: str) -> str:
    """The last line a command stopped by `_database_locked` prints."""
    return (f"error: the MLflow store did not answer (MlflowException: database is locked); run `{command}` again "
            "to finish")


def test_a_promote_stopped_by_the_store_after_moving_champion_is_recorded_by_its_rerun(blocked_registry, monkeypatch):
    from pipeline.registry import model_version_info

    client = blocked_registry
    store_back = _store_stops_after_moving_champion(monkeypatch)
    stopped = runner.invoke(app, ["promote", "--model-name", "m"])
    assert stopped.exit_code == 2 and stopped.output.strip().splitlines()[-1] == _store_stopped_line(
        "demoire promote"), stopped.output
    assert _champion(client) == "2" and "promote.history" not in client.get_model_version("m", "2").tags
    store_back()
    again = runner.invoke(app, ["promote", "--model-name", "m"])
    assert again.exit_code == 0 and "v2 is already champion" in again.output, again.output
    history = json.loads(client.get_model_version("m", "2").tags["promote.history"])
    assert [(entry["promote"], entry["champion_version"]) for entry in history] == [(True, "1")]
    assert "promote.pending" not in client.get_registered_model("m").tags
    assert model_version_info("models:/m@champion")["last_promote"]["promote"] is True


def test_a_registrations_unapplied_promote_is_recorded_not_promoted_before_a_promote_moves_champion_there(
        blocked_registry, monkeypatch):
    client = blocked_registry
    _registration_died_before_applying(client, "2")
    store_back = _store_stops_after_moving_champion(monkeypatch)
    assert runner.invoke(app, ["promote", "--model-name", "m"]).exit_code == 2 and _champion(client) == "2"
    tags = client.get_model_version("m", "2").tags  # final already: the rerun leaves it, as a whole promote would
    assert tags["promotion"] == "not_promoted" and tags["promotion_reason"].startswith(
        "its registration died before moving champion to v2, and `demoire promote` decided instead; ")
    store_back()
    assert runner.invoke(app, ["promote", "--model-name", "m"]).exit_code == 0
    after = client.get_model_version("m", "2").tags
    history = json.loads(after.pop("promote.history"))
    assert after == tags
    assert [(entry["promote"], entry["champion_version"]) for entry in history] == [(True, "1")]


def test_each_promote_appends_its_entry_even_one_identical_to_the_last(blocked_registry, monkeypatch, tmp_path):
    import time

    import mlflow

    import pipeline.registry.promotion as promotion
    from pipeline.evaluation.gate import GateRule
    from pipeline.registry import apply_promote, compare_challenger, promote_history
    from pipeline.registry.promotion import settle_interrupted_promote

    client = blocked_registry
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    now = time.gmtime()
    monkeypatch.setattr(promotion.time, "gmtime", lambda *args: now)  # two promotes within one second
    keep = compare_challenger(client, "m", GateRule(10.0, 0.0), lambda: pytest.fail("both were scored on gate set g"))
    assert not keep.promote
    apply_promote(client, "m", keep, "demoire promote")
    apply_promote(client, "m", keep, "demoire promote")
    assert len(promote_history(client, "m", "2")) == 2
    promote = compare_challenger(client, "m", GateRule(0.1, 0.0), lambda: pytest.fail("both were scored on gate set g"))
    apply_promote(client, "m", promote, "demoire promote")
    history = promote_history(client, "m", "2")
    assert [entry["promote"] for entry in history] == [False, False, True] and _champion(client) == "2"
    client.set_registered_model_tag("m", "promote.pending", json.dumps(history[-1:]))  # died before removing it
    settle_interrupted_promote(client, "m")  # its entry is in the history already: not appended again
    assert promote_history(client, "m", "2") == history and "promote.pending" not in client.get_registered_model(
        "m").tags


def test_a_rollback_stopped_by_the_store_says_so_in_one_line(blocked_registry, monkeypatch):
    import pipeline.registry.promotion as promotion

    client = blocked_registry
    assert runner.invoke(app, ["promote", "--model-name", "m"]).exit_code == 0 and _champion(client) == "2"
    monkeypatch.setattr(promotion, "settle_interrupted_promote", _database_locked)
    stopped = runner.invoke(app, ["rollback", "--model-name", "m"])
    assert stopped.exit_code == 2 and stopped.output.strip().splitlines()[-1] == _store_stopped_line(
        "demoire rollback"), stopped.output
    assert _champion(client) == "2"


def test_a_killed_promote_is_recorded_by_the_next_command_as_far_as_it_went(blocked_registry, tmp_path):
    import subprocess
    import sys

    client = blocked_registry
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}

    def killed_at(point: str) -> None:
        run = subprocess.run([sys.executable, "-m", "pipeline.cli", "promote", "--model-name", "m"],
                             env={**env, "DEMOIRE_KILL_AT": point}, cwd=tmp_path, capture_output=True, text=True)
        assert run.returncode == -9, run.stderr

    killed_at("promote.pending_recorded")  # before the move: its decision goes, and the rerun decides again
    assert _champion(client) == "1" and "promote.history" not in client.get_model_version("m", "2").tags
    killed_at("promote.champion_moved")  # after it: recorded by whatever next takes the lock, a rollback here
    assert _champion(client) == "2" and "promote.history" not in client.get_model_version("m", "2").tags
    back = runner.invoke(app, ["rollback", "--model-name", "m"])
    assert back.exit_code == 0 and "champion: v2 → v1" in back.output, back.output
    history = json.loads(client.get_model_version("m", "2").tags["promote.history"])
    assert [(entry["promote"], entry["champion_version"]) for entry in history] == [(True, "1")]
    assert "promote.pending" not in client.get_registered_model("m").tags


def _by_hand_challenger(client, psnr: float) -> str:
    """A version registered by hand (no registration decision) with scores on v1's gate set, made challenger."""
    first = client.get_model_version("m", "2")
    tags = {"test_psnr": str(psnr), "test_ssim": "0.9", "test_mse": "0.001", "gate_set": "g2"}
    version = str(client.create_model_version("m", first.source, first.run_id, tags=tags).version)
    client.set_registered_model_alias("m", "challenger", version)
    client.set_model_version_tag("m", "1", "gate_set", "g2")
    return version


def test_a_promote_of_a_version_registered_by_hand_records_its_decision_after_the_move(blocked_registry, tmp_path,
                                                                                      monkeypatch):
    import pipeline.registry.promotion as promotion

    client = blocked_registry
    v3 = _by_hand_challenger(client, 30.0)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    for point in ("promote.pending_recorded", "register.decision_recorded"):  # before the move, and after it
        run = subprocess.run([sys.executable, "-m", "pipeline.cli", "promote", "--model-name", "m"],
                             env={**env, "DEMOIRE_KILL_AT": point}, cwd=tmp_path, capture_output=True, text=True)
        assert run.returncode == -9, run.stderr
    assert _champion(client) == v3  # the second moved it, and died writing the decision tags after
    again = runner.invoke(app, ["promote", "--model-name", "m"])  # not taken for a registration that died
    assert again.exit_code == 0 and f"v{v3} is already champion" in again.output, again.output
    assert "its registration" not in (client.get_model_version("m", v3).description or "")
    assert [entry["promote"] for entry in json.loads(client.get_model_version("m", v3).tags["promote.history"])] == [
        True]
    v4 = _by_hand_challenger(client, 35.0)
    loads = []
    monkeypatch.setattr(promotion, "load_model", lambda folder: loads.append(folder))
    assert runner.invoke(app, ["promote", "--model-name", "m"]).exit_code == 0 and _champion(client) == v4
    assert len(loads) == 1 and client.get_model_version("m", v4).tags["promotion"] == "promoted"


def test_a_promote_takes_an_empty_decision_tag_for_none(blocked_registry):
    client = blocked_registry
    client.set_model_version_tag("m", "2", "promotion.decision", "")  # emptied by hand
    client.delete_model_version_tag("m", "2", "promotion")
    result = runner.invoke(app, ["promote", "--model-name", "m"])
    assert result.exit_code == 0 and _champion(client) == "2", result.output
    tags = client.get_model_version("m", "2").tags  # its decision recorded as a version registered by hand's
    assert tags["promotion"] == "promoted" and json.loads(tags["promotion.decision"])["promote"] is True


def test_a_promote_whose_lock_was_broken_while_it_decided_writes_nothing(blocked_registry, monkeypatch):
    import pipeline.registry as registry

    client = blocked_registry
    compare_challenger = registry.compare_challenger

    def outliving_the_lease(*args, **kwargs):  # a long re-score: the lease ran out and a registration broke the lock
        decision = compare_challenger(*args, **kwargs)
        client.rename_registered_model("m.registry-lock", "m.registry-lock.stale.test")
        return decision

    monkeypatch.setattr(registry, "compare_challenger", outliving_the_lease)
    tags_before = client.get_model_version("m", "2").tags
    result = runner.invoke(app, ["promote", "--model-name", "m"])
    assert result.exit_code == 2 and _champion(client) == "1", result.output
    assert result.output.strip().splitlines()[-1].startswith("error: lost the registry lock m.registry-lock (lease ")
    assert client.get_model_version("m", "2").tags == tags_before
    assert "promote.pending" not in client.get_registered_model("m").tags


def test_a_promote_whose_lock_was_broken_before_its_move_does_not_move_champion(blocked_registry, monkeypatch):
    import pipeline.registry.promotion as promotion

    client = blocked_registry
    kill_point = promotion.kill_point

    def breaking_the_lock(point: str) -> None:  # the lease ran out while the pending entry was written
        if point == "promote.pending_recorded":
            client.rename_registered_model("m.registry-lock", "m.registry-lock.stale.test")
        kill_point(point)

    monkeypatch.setattr(promotion, "kill_point", breaking_the_lock)
    result = runner.invoke(app, ["promote", "--model-name", "m"])
    assert result.exit_code == 2 and _champion(client) == "1", result.output
    assert result.output.strip().splitlines()[-1].startswith("error: lost the registry lock m.registry-lock (lease ")
    monkeypatch.setattr(promotion, "kill_point", kill_point)
    again = runner.invoke(app, ["promote", "--model-name", "m"])  # drops the pending entry, then decides again
    assert again.exit_code == 0 and _champion(client) == "2", again.output
    history = json.loads(client.get_model_version("m", "2").tags["promote.history"])
    assert [entry["promote"] for entry in history] == [True]


def test_a_rescoring_error_names_the_version_by_its_uri_not_a_temporary_folder(blocked_registry, tmp_path, rng):
    from urllib.parse import urlsplit

    from tests.test_registry import _gate_data

    client = blocked_registry
    data, pairs = _gate_data(tmp_path, rng)
    client.set_model_version_tag("m", "2", "gate_set", "h")  # scored on another set than v1: both are re-scored
    for weights in Path(urlsplit(client.get_model_version_download_uri("m", "2")).path).rglob("model.pt"):
        weights.write_bytes(b"truncated")
    result = runner.invoke(app, ["promote", "--model-name", "m", "--data", str(data), "--pairs", str(pairs),
                                 "--device", "cpu"])
    assert result.exit_code == 2 and _champion(client) == "1", result.output
    assert result.output.strip().splitlines()[-1].startswith(
        "error: models:/m/2/artifacts/model/model.pt holds no weights of the unet model its model.json describes")


def _shifted_unet(path: Path, shift: float) -> Path:
    """A unet whose output is its input plus `shift` everywhere: its gate scores are known without training."""
    spec = ModelSpec("unet", 8, 2)
    net = build_model(spec)
    torch.nn.init.zeros_(net.head[0].weight)
    torch.nn.init.constant_(net.head[0].bias, shift)
    save_model(net, spec, path)
    return path


def test_promote_downloads_a_rescored_challenger_once(blocked_registry, tmp_path, rng, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    import pipeline.registry.promotion as promotion
    from pipeline.evaluation.gate import GateRule
    from pipeline.registry import log_demoire_model, register_and_gate, use_tracking_store
    from tests.test_registry import _gate_data

    client = blocked_registry
    data, pairs = _gate_data(tmp_path, rng)  # moiré = clean / 2 + 40: brightening by +0.09 brings it closer
    use_tracking_store(tmp_path, "test")
    for shift, psnr, rule in ((-0.2, 40.0, GateRule(0.05, 0.005)), (0.09, 41.0, GateRule(10.0, 0.0))):
        with mlflow.start_run() as run:  # v3 (darkening) becomes champion, v4 (brightening) the blocked challenger
            info = log_demoire_model(_shifted_unet(tmp_path / f"shift{shift}", shift))
        register_and_gate(MlflowClient(), "m", info.model_uri, run.info.run_id,
                          {"test_psnr": psnr, "test_ssim": 0.8, "test_mse": 0.01}, {"gate_set": "g"}, rule)
    mlflow.set_tracking_uri(None)
    client.set_model_version_tag("m", "4", "gate_set", "h")  # scored on another set than v3: both are re-scored
    assert _champion(client) == "3"
    downloads: dict[str, int] = {}
    download_model_files = promotion.download_model_files

    def counted(uri, dst):  # the real download, counted
        downloads[uri] = downloads.get(uri, 0) + 1
        return download_model_files(uri, dst)

    monkeypatch.setattr(promotion, "download_model_files", counted)
    result = runner.invoke(app, ["promote", "--model-name", "m", "--data", str(data), "--pairs", str(pairs),
                                 "--device", "cpu"])
    assert result.exit_code == 0 and "champion: v3 → v4" in result.output, result.output
    assert "challenger v4 re-scored" in " ".join(result.output.split()) and _champion(client) == "4"
    assert downloads == {"models:/m/4": 1, "models:/m/3": 1}


def _strict_json(text: str) -> dict:
    """Parse JSON refusing NaN and Infinity, which strict readers (DVC, jq, browsers) reject."""
    def refuse(constant):
        raise AssertionError(f"{constant} in JSON output")

    return json.loads(text, parse_constant=refuse)


def test_evaluate_selects_pairs_by_glob_and_limit_and_prints_every_key_as_strict_json(tmp_path, rng):
    from tests.evaluation.test_real_sets import SUMMARY_KEYS, real_looking_pairs

    model = _model(tmp_path)
    root = real_looking_pairs(tmp_path / "pairs", rng, ["fhdmi_1.png", "fhdmi_2.png", "tip_1.png"])
    write_png(root / "moire" / "same.png", read_rgb(root / "clean" / "tip_1.png"))  # moiré-free: identity PSNR inf
    write_png(root / "clean" / "same.png", read_rgb(root / "clean" / "tip_1.png"))
    args = ["evaluate", "--model", model, "--pairs", str(root), "--device", "cpu", "--tile", "32", "--overlap", "8"]
    result = runner.invoke(app, [*args, "--include", "fhdmi_*", "--json"])
    assert result.exit_code == 0, result.output
    summary = _strict_json(result.stdout.strip().splitlines()[-1])
    assert set(summary) == SUMMARY_KEYS - {"hash"} and (summary["count"], summary["skipped"]) == (2, 0)
    net = load_model(Path(model))[0]
    served = restore_image(net, read_rgb(root / "moire" / "fhdmi_1.png"), "cpu", 32, 8,
                           falloff=infer_params(None).falloff)  # 40x56: tiled
    from pipeline.data.dataset import to_tensor
    from pipeline.evaluation.evaluate import evaluate_pairs

    first = evaluate_pairs(lambda x: to_tensor(served),
                           [(read_rgb(root / "moire" / "fhdmi_1.png"), read_rgb(root / "clean" / "fhdmi_1.png"))], ["a"])
    one = _strict_json(runner.invoke(app, [*args, "--limit", "1", "--json"]).stdout.strip().splitlines()[-1])
    assert one["count"] == 1 and one["psnr"] == pytest.approx(first.psnr[0], abs=1e-9)

    identical = runner.invoke(app, [*args, "--include", "same*", "--json"])
    assert identical.exit_code == 0, identical.output
    same = _strict_json(identical.stdout.strip().splitlines()[-1])
    assert same["identity_psnr"] == MAX_PSNR_DB and same["moire_removed_mid"] is None and same["psnr"] > 0  # capped

    table = runner.invoke(app, [*args, "--include", "tip_*"])
    assert table.exit_code == 0, table.output
    for text in ("tip_*", "tone-aligned PSNR (dB)", "tone-aligned SSIM", "identity (moiré input)",
                 "moiré removed", "low (< 1/32 cycles/px)", "high (≥ 1/8)", " %"):
        assert text in table.stdout, text

    bad = runner.invoke(app, [*args, "--include", "fhdmi_[1"])
    assert bad.exit_code == 2 and bad.output.strip().startswith("error: include 'fhdmi_[1': unclosed [ in the glob")
    none = runner.invoke(app, [*args, "--include", "uhdm_*"])
    assert none.exit_code == 2
    assert none.output.strip() == f"error: no pair in {root} matches include 'uhdm_*' (generic layout, 4 pairs, 0 unpaired files)"


@pytest.fixture
def real_registry(tmp_path, monkeypatch, rng):
    """v1 champion scored on the test split only; v2 registered by the real gate under a strict rule (10 dB),
    so the default rule would decide again; params.yaml lists the real sets (relative to its folder)."""
    import mlflow
    import torch
    import yaml
    from mlflow.tracking import MlflowClient

    from pipeline.config import load_params
    from pipeline.evaluation.gate import REAL, GateRule, local_gate
    from pipeline.registry import log_demoire_model, register_and_gate, use_tracking_store
    from tests.evaluation.test_real_sets import real_looking_pairs

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    real_looking_pairs(tmp_path / "photos", rng, ["a_1.png", "a_2.png", "b_1.png"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "evaluate": {"device": "cpu", "real_sets": [{"name": "a", "path": "photos", "include": "a_*"},
                                                    {"name": "b", "path": "photos", "include": "b_*"}]},
        "infer": {"tile_size": 32, "tile_overlap": 8},
        "register": {"require_gain_over_input": False}}))  # an untrained model: below the input (tested below)
    gate = local_gate(load_params(tmp_path / "params.yaml"), tmp_path, tmp_path, tmp_path, torch.device("cpu"))
    use_tracking_store(tmp_path, "test")
    model = _model(tmp_path)
    with mlflow.start_run() as run:
        info = log_demoire_model(model)
    register_and_gate(MlflowClient(), "m", info.model_uri, run.info.run_id,
                      {"test_psnr": 22.0, "test_ssim": 0.8, "test_mse": 0.01}, {"gate_set": "g"}, GateRule(0.05, 0.005))
    champion = gate.rescore(Path(model))
    with mlflow.start_run() as run:
        info = log_demoire_model(model)
    challenger = {"real_psnr": champion["psnr"] + 0.5, "real_tone_psnr": champion["tone_psnr"] + 0.5,
                  "real_ssim": champion["ssim"], "real_mse": champion["mse"], "test_psnr": 21.0, "test_ssim": 0.7,
                  "test_mse": 0.02}
    register_and_gate(MlflowClient(), "m", info.model_uri, run.info.run_id, challenger,
                      {"gate_set": "g", "real_gate_set": gate.digest}, GateRule(10.0, 0.0), gate.rescore, REAL)
    mlflow.set_tracking_uri(None)
    yield MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"), champion
    mlflow.set_tracking_uri(None)


def test_promote_dry_run_on_real_sets_rescores_the_champion_and_shows_raw_and_tone_aligned_rows(real_registry):
    client, champion = real_registry
    assert client.get_model_version("m", "2").tags["gate.kind"] == "real"
    assert client.get_model_version("m", "2").tags["promotion"] == "not_promoted"  # 10 dB margin at registration

    # v2 was registered without the input's scores: the re-scoring on the real sets gives them, and the floor
    # keeps the untrained model out (it beats the champion, not the untouched photos)
    floor = yaml.safe_load(Path("params.yaml").read_text())
    floor["register"]["require_gain_over_input"] = True
    Path("floor.yaml").write_text(yaml.safe_dump(floor))
    kept = runner.invoke(app, ["promote", "--model-name", "m", "--dry-run", "--device", "cpu",
                               "--params", "floor.yaml"])
    assert kept.exit_code == 0, kept.output
    assert "keep champion: not better than the untouched input: real PSNR" in kept.output
    assert "dry run: champion would stay at v1; nothing changed" in kept.output
    table = kept.output.split("keep champion:")[0]  # the input's column, the floor in the rule and the caption
    assert "┃ input " in table and "≥ +0.05 dB, >" in table, kept.output
    assert "input floor on: the challenger must beat the untouched input" in " ".join(table.split())

    dry = runner.invoke(app, ["promote", "--model-name", "m", "--dry-run", "--device", "cpu"])
    assert dry.exit_code == 0, dry.output
    assert "re-scoring on the real sets (a 2, b 1 pairs), gate set" in dry.output
    assert "(real sets; gate.kind real)" in dry.output
    for row in ("real PSNR", "real tone-aligned PSNR", "real SSIM", "real MSE", "+0.5000", "≥ +0.05 dB"):
        assert row in dry.output, row
    assert "champion v1 re-scored on this gate set" in " ".join(dry.output.split())
    assert "real tone-aligned PSNR" in dry.output.split("promote:")[1]  # the reason names both numbers
    assert "dry run: champion would move to v2; nothing changed" in dry.output
    assert "dB, >" not in dry.output and "input floor off" in " ".join(dry.output.split())  # params.yaml's
    assert _champion(client) == "1"

    done = runner.invoke(app, ["promote", "--model-name", "m", "--device", "cpu"])
    assert done.exit_code == 0 and "champion: v1 → v2" in done.output, done.output
    tags = client.get_model_version("m", "2").tags
    assert tags["gate.kind"] == "real" and float(tags["gate.champion_tone_psnr"]) == pytest.approx(champion["tone_psnr"])
