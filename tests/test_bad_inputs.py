"""Fault injection, bad input: params, images, paths and served requests a hostile but fair user would try.

Every case runs the real command in-process (typer's runner) or the served model's own input check, and
must end with a documented exit code (0 done, 1 some images skipped, 2 refused: nothing done), at most
one `error:` line, no traceback, nothing lost (a file the user had in the output folder is untouched)
and no silently wrong output. `CASES` counts them for benchmarks/reliability.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.io import write_png

runner = CliRunner()

# (dotted key, bad value): each must be refused by check-params with one line naming the key.
BAD_PARAMS = [
    ("seed", -1), ("seed", "abc"), ("seed", 2**40), ("profile", "huge"), ("colour", 3),
    ("synthesize.size", -64), ("synthesize.size", 0), ("synthesize.size", 100000), ("synthesize.n_pairs", 0),
    ("synthesize.n_pairs", 10**9), ("synthesize.workers", 0), ("synthesize.preset", "wavy"),
    ("synthesize.preset", "missing.yaml"), ("synthesize.optics.distance_mm", [500, 300]),
    ("synthesize.optics.distance_mm", [1, 2, 3]), ("synthesize.optics.distance_mm", "far"),
    ("synthesize.display.fill_factor", [0.0, 2.0]), ("synthesize.display.subpixel_layouts", []),
    ("synthesize.display.subpixel_layouts", ["hexagonal"]), ("synthesize.sources.procedural", -5),
    ("synthesize.sources.screen_kinds", ["poster"]), ("synthesize.sensor.shot_noise", [0.0, 5.0]),
    ("synthesize.isp.jpeg_quality", [0, 200]), ("synthesize.moire_model", "paint"), ("synthesize.bogus", 1),
    ("preprocess.val_fraction", 0.0), ("preprocess.val_fraction", 0.7), ("preprocess.test_fraction", -0.1),
    ("preprocess.datasets", [{"path": "/x"}]), ("preprocess.datasets", [{"path": "/x", "split": "dev"}]),
    ("preprocess.synthetic", "maybe"), ("train.epochs", 0), ("train.epochs", 1.5), ("train.lr", 0),
    ("train.lr", 5.0), ("train.batch_size", 0), ("train.model", "resnet"), ("train.loss", "huber"),
    ("train.loss", {"mse": 0.0}), ("train.device", "tpu"), ("train.processes", 0), ("train.ema_decay", 1.0),
    ("evaluate.grid_count", 0), ("evaluate.real_sets", [{"name": "tone", "path": "x"}]),
    ("evaluate.real_sets", [{"name": "a b", "path": "x"}]), ("evaluate.real_sets", [{"name": "a", "path": "x",
                                                                                    "include": "fhdmi_[1"}]),
    ("infer.tile_size", 8), ("infer.tile_overlap", 400), ("infer.max_pixels", 0), ("register.model_name", "a/b"),
    ("register.promotion_margin_db", -1), ("register.ssim_tolerance", 2),
    ("registration", {"model_name": "x"}),  # the section's name in code: refused, as DVC would not find `register`
    ("evaluate.real_sets", [{"name": "a", "path": "nowhere"}]), ("synthesize.sources.folders", ["nowhere"]),
]
BAD_PARAMS_FILES = {
    "empty": "", "comment only": "# nothing\n", "duplicate top-level key": "seed: 1\nseed: 2\n",
    "duplicate nested key": "train:\n  epochs: 3\n  epochs: 4\n", "a list": "- 1\n- 2\n", "a scalar": "42\n",
    "unclosed bracket": "seed: [1\n", "tab indentation": "train:\n\tepochs: 3\n", "binary": "\x00\x01\x02",
    "fractions leave no train": "preprocess: {val_fraction: 0.45, test_fraction: 0.45}\n",
    "a list as a key": "[1]: 2\n", "a preset file whose base is a list": "synthesize: {preset: PRESET}\n",
}
# Where the file's own line is known, the message gives it (as DVC's does).
BAD_PARAMS_LINES = {"unclosed bracket": "line 2, column 1", "tab indentation": "line 2", "a list as a key": "line 1",
                    "duplicate nested key": "line 3"}


def _set(mapping: dict, dotted: str, value) -> dict:
    *parents, leaf = dotted.split(".")
    node = mapping
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return mapping


def _one_error_line(result) -> str:
    """The single `error:` line of a refused command; no traceback, exit code 2."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("key,value", BAD_PARAMS, ids=[f"{k}={v!r}"[:40] for k, v in BAD_PARAMS])
def test_bad_param_value_is_refused_in_one_line_naming_it(tmp_path, key, value):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_set({"seed": 1}, key, value)))
    line = _one_error_line(runner.invoke(app, ["check-params", "--params", str(path)]))
    assert key.split(".")[-1] in line or key.split(".")[0] in line, line


@pytest.mark.parametrize("case", sorted(BAD_PARAMS_FILES))
def test_bad_params_file_is_refused_in_one_line(tmp_path, case):
    path = tmp_path / "params.yaml"
    preset = tmp_path / "preset.yaml"
    preset.write_text("base: [1]\n")
    path.write_text(BAD_PARAMS_FILES[case].replace("PRESET", str(preset)))
    line = _one_error_line(runner.invoke(app, ["check-params", "--params", str(path)]))
    assert str(path) in line and BAD_PARAMS_LINES.get(case, "") in line


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch

    from pipeline.models import ModelSpec, build_model, save_model

    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    spec = ModelSpec("simple", 4, 2)
    save_model(build_model(spec), spec, folder)
    return folder


def _image(path, array, **save):
    Image.fromarray(array).save(path, **save)
    return path


def _odd_images(folder):
    """name → (file, expected: 'ok' with the restored image's shape, or 'skipped')."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    cases = {}
    write_png(folder / "truncated.png", rgb)
    (folder / "truncated.png").write_bytes((folder / "truncated.png").read_bytes()[:200])
    cases["truncated"] = (folder / "truncated.png", "skipped")
    (folder / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cases["junk"] = (folder / "junk.png", "skipped")
    (folder / "empty.jpg").write_bytes(b"")
    cases["zero bytes"] = (folder / "empty.jpg", "skipped")
    (folder / "notes.png").write_text("hello")
    cases["text named png"] = (folder / "notes.png", "skipped")
    cases["float out of range"] = (_image(folder / "hdr.tif", np.full((24, 32), 7.5, np.float32)), "skipped")
    cases["float nan"] = (_image(folder / "nan.tif", np.full((24, 32), np.nan, np.float32)), "skipped")
    cases["float in range"] = (_image(folder / "float.tif", np.full((24, 32), 0.25, np.float32)), (24, 32))
    cases["dark 16-bit"] = (_image(folder / "dark16.png", np.full((24, 32), 3000, np.uint16)), (24, 32))
    cases["dark 16-bit tiff"] = (_image(folder / "dark16.tif", np.full((24, 32), 3000, np.uint16)), (24, 32))
    # 8-bit values in 32-bit samples: read as 16-bit, they came out black
    cases["32-bit integer tiff"] = (_image(folder / "int32.tif", np.full((24, 32), 200, np.int32)), "skipped")
    cases["grayscale"] = (_image(folder / "gray.png", rgb[..., 0]), (24, 32))
    cases["rgba"] = (_image(folder / "rgba.png", np.dstack([rgb, rgb[..., :1]])), (24, 32))
    cases["palette"] = (_image(folder / "palette.gif", rgb), (24, 32))
    cases["cmyk jpeg"] = (folder / "cmyk.jpg", (24, 32))
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    cases["exif rotated"] = (_image(folder / "phone.jpg", rgb, exif=exif), (32, 24))
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    cases["animated gif"] = (folder / "anim.gif", (24, 32))
    cases["1x1"] = (_image(folder / "dot.png", rgb[:1, :1]), (1, 1))
    cases["1 pixel tall"] = (_image(folder / "line.png", rgb[:1]), (1, 32))
    cases["bmp"] = (_image(folder / "old.bmp", rgb), (24, 32))
    cases["webp"] = (_image(folder / "new.webp", rgb), (24, 32))
    return cases


def test_odd_and_broken_images_are_restored_or_skipped_never_silently_wrong(tmp_path, model_dir, caplog):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cases = _odd_images(inputs)
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(inputs), "-o", str(out), "--model", str(model_dir), "--params",
                                 str(_defaults(tmp_path))])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    for name, (path, expected) in cases.items():
        target = out / (path.stem + ".png")
        if expected == "skipped":
            assert not target.exists() and f"skipped {path}" in result.output, name
        else:
            assert np.asarray(Image.open(target)).shape[:2] == expected, name
    assert np.asarray(Image.open(out / "dark16.png")).mean() < 80  # dark stays dark (3000 / 65535)
    assert f"{inputs / 'int32.tif'} has 32-bit integer pixels; only 8- and 16-bit images are read" in result.output
    assert f"{inputs / 'anim.gif'} has 2 frames; using the first" in caplog.text
    assert len(BAD_IMAGE_CASES) == len(cases)


BAD_IMAGE_CASES = ["truncated", "junk", "zero bytes", "text named png", "float out of range", "float nan",
                   "float in range", "dark 16-bit", "dark 16-bit tiff", "32-bit integer tiff", "grayscale", "rgba", "palette", "cmyk jpeg", "exif rotated",
                   "animated gif", "1x1", "1 pixel tall", "bmp", "webp"]


def _defaults(tmp_path):
    path = tmp_path / "defaults.yaml"
    path.write_text("seed: 1\n")
    return path


BAD_PATHS = ["out is a file", "out below a file", "model missing", "params missing", "params is a folder",
             "input missing", "glob matches nothing", "input an empty folder", "report out is a folder",
             "synth-report out is a file",
             "synthesize over a foreign folder", "synthesize existing without overwrite",
             "evaluate pairs missing", "evaluate 1x1 pair", "synthesize larger than the disk",
             "model spec not JSON", "model spec a list", "model weights damaged", "model weights of another width",
             "model weights a pickle of other objects", "model spec channels as text", "model spec a billion channels",
             "model spec a negative correction width",
             "report reads metrics", "report reads history", "report reads registration",
             "calibrate from an unknown base"]


@pytest.mark.parametrize("case", BAD_PATHS)
def test_bad_paths_are_refused_up_front_and_nothing_is_lost(tmp_path, model_dir, case):
    image = tmp_path / "photo.png"
    write_png(image, np.zeros((16, 16, 3), np.uint8))
    keep = tmp_path / "keep.txt"
    keep.write_text("the user's")
    params = str(_defaults(tmp_path))
    predict = ["predict", str(image), "--model", str(model_dir), "--params", params]
    if case == "out is a file":
        args = predict + ["-o", str(keep)]
    elif case == "out below a file":
        args = predict + ["-o", str(keep / "sub")]
    elif case == "model missing":
        args = ["predict", str(image), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "nope"), "--params", params]
    elif case == "params missing":
        args = predict[:-2] + ["--params", str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "o")]
    elif case == "params is a folder":
        args = predict[:-2] + ["--params", str(tmp_path), "-o", str(tmp_path / "o")]
    elif case in ("input missing", "glob matches nothing", "input an empty folder"):
        (tmp_path / "empty").mkdir()
        target = {"input missing": str(tmp_path / "nope.png"), "glob matches nothing": str(tmp_path / "*.tiff"),
                  "input an empty folder": str(tmp_path / "empty")}[case]
        result = runner.invoke(app, ["predict", target, "-o", str(tmp_path / "o"), "--model", str(model_dir),
                                     "--params", params])
        assert result.exit_code == 1 and "Traceback" not in result.output and "skipped" in result.output
        return
    elif case.startswith("model "):  # a damaged copy of the model folder: one line naming the file, for any command
        import json
        import shutil

        broken = tmp_path / "broken"
        shutil.copytree(model_dir, broken)
        spec = json.loads((broken / "model.json").read_text())
        damage = {"model spec not JSON": ("model.json", "{bad"), "model spec a list": ("model.json", "[1]"),
                  "model weights damaged": ("model.pt", "junk"),
                  "model weights of another width": ("model.json", json.dumps({**spec, "channels": 3})),
                  "model weights a pickle of other objects": ("model.pt", ""),
                  # each was a traceback (TypeError, RuntimeError, an allocation of gigabytes) or passed unnoticed
                  "model spec channels as text": ("model.json", json.dumps({**spec, "channels": "48"})),
                  "model spec a billion channels": ("model.json", json.dumps({**spec, "channels": 10**9})),
                  "model spec a negative correction width": ("model.json",
                                                             json.dumps({**spec, "correction_width": -1}))}[case]
        if case == "model weights a pickle of other objects":  # torch's error advises weights_only=False: unsafe
            import torch

            torch.save({"path": Path("x")}, broken / "model.pt")
            damage = ("model.pt", None)
        else:
            (broken / damage[0]).write_text(damage[1])
        line = _one_error_line(runner.invoke(app, ["predict", str(image), "-o", str(tmp_path / "o"), "--model",
                                                   str(broken), "--params", params]))
        assert "weights_only" not in line
        named = "model.pt" if case == "model weights of another width" else damage[0]  # the weights do not fit
        assert str(broken / named) in line
        key = {"model spec channels as text": "channels = '48'", "model spec a billion channels": "channels = 1000000000",
               "model spec a negative correction width": "correction_width = -1"}.get(case, "")
        assert key in line, line
        return
    elif case == "report out is a folder":
        args = ["report", "-o", str(tmp_path)]
    elif case.startswith("report reads "):  # a file of another kind where the report expects a stage's output
        inputs = {"metrics": tmp_path / "metrics.json", "history": tmp_path / "history.csv",
                  "registration": tmp_path / "registration.json"}
        for path in inputs.values():  # the others as the stages write them: only the one at fault is named
            path.write_text("epoch,train_loss,val_loss,val_psnr\n1,0.1,0.1,20\n" if path.suffix == ".csv" else "{}")
        inputs[case.removeprefix("report reads ")] = image
        args = ["report", "-o", str(tmp_path / "r.html"), "--grid", str(image),
                *[part for option, path in inputs.items() for part in (f"--{option}", str(path))]]
        assert str(image) in _one_error_line(runner.invoke(app, args)) and not (tmp_path / "r.html").exists()
        return
    elif case == "calibrate from an unknown base":
        args = ["calibrate", "--real", str(tmp_path), "--out", str(tmp_path / "c.yaml"), "--base", "nope"]
    elif case == "synth-report out is a file":
        args = ["synth-report", "--pairs", str(tmp_path), "--out", str(keep)]
    elif case == "synthesize over a foreign folder":
        args = ["synthesize", "--out", str(tmp_path), "--n", "1", "--size", "32", "--overwrite"]
    elif case == "synthesize existing without overwrite":
        args = ["synthesize", "--out", str(tmp_path), "--n", "1", "--size", "32"]
    elif case == "synthesize larger than the disk":  # 10 M pairs of 4096²: refused from the estimate, at once
        args = ["synthesize", "--out", str(tmp_path / "huge"), "--n", "10000000", "--size", "4096"]
    elif case == "evaluate pairs missing":
        args = ["evaluate", "--model", str(model_dir), "--pairs", str(tmp_path / "none"), "--params", params]
    else:  # a 1x1 pair among readable ones: skipped with a reason, the rest scored
        pairs = tmp_path / "pairs"
        for sub in ("moire", "clean"):
            write_png(pairs / sub / "a.png", np.zeros((16, 16, 3), np.uint8))
            write_png(pairs / sub / "b.png", np.zeros((1, 1, 3), np.uint8))
        result = runner.invoke(app, ["evaluate", "--model", str(model_dir), "--pairs", str(pairs), "--params", params,
                                     "--json"])
        assert result.exit_code == 1 and "skipped b.png: 1x1 pixels, below the 11x11 SSIM window" in result.output
        assert "Infinity" not in result.output and "NaN" not in result.output
        return
    _one_error_line(runner.invoke(app, args))
    assert keep.read_text() == "the user's" and image.is_file()


# Served requests: the model's own check (pipeline.registry.pyfunc.checked_image), answered with 400.
BAD_REQUESTS = {
    "floats in [0, 1]": [[[0.5, 0.5, 0.5]]], "negative": [[[-1, 0, 0]]], "above 255": [[[300, 0, 0]]],
    "booleans": [[[True, False, True]]], "2-D": [[1, 2, 3]], "4 channels": [[[1, 2, 3, 4]]],
    "1 channel": [[[1]]], "empty": [], "ragged rows": [[[1, 2, 3]], [[1, 2, 3], [4, 5, 6]]], "strings": [[["a", "b", "c"]]],
    "a dict": {"image": 1}, "None": None, "nan": [[[float("nan"), 0, 0]]], "too many pixels": "big",
    "scalar": 7,
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_served_model_refuses_bad_requests_instead_of_casting(case):
    from mlflow.exceptions import MlflowException

    from pipeline.registry.pyfunc import checked_image

    request = np.zeros((3000, 3000, 3), np.uint8) if BAD_REQUESTS[case] == "big" else BAD_REQUESTS[case]
    with pytest.raises(MlflowException) as info:
        checked_image(request, max_pixels=8_388_608)
    assert info.value.get_http_status_code() == 400 and "\n" not in info.value.message
    assert checked_image([[[0, 128, 255]]], 10).dtype == np.uint8  # integers in range pass, as uint8


def test_served_model_takes_a_read_only_image_without_a_warning():
    """np.asarray of a PIL image is read-only; torch warns when it shares such an array, so it is copied."""
    from pipeline.registry.pyfunc import checked_image

    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    image.flags.writeable = False
    checked = checked_image(image, 10)
    assert checked.flags.writeable and np.array_equal(checked, image)
    writable = image.copy()
    assert checked_image(writable, 10) is writable  # a writable array is not copied


def test_served_model_names_its_own_pixel_limit_for_an_encoded_photo():
    from mlflow.exceptions import MlflowException

    from pipeline.io import save_png
    from pipeline.registry.pyfunc import decoded_photo

    encoded = io.BytesIO()
    save_png(np.zeros((40, 60, 3), np.uint8), encoded)
    with pytest.raises(MlflowException) as info:
        decoded_photo(encoded.getvalue(), max_pixels=100)
    assert info.value.message == ("image from the request is 60x40 = 2,400 pixels, over the limit of 100 "
                                  "(max_pixels in its model_config)")


CASES = (len(BAD_PARAMS) + len(BAD_PARAMS_FILES) + len(BAD_IMAGE_CASES) + len(BAD_PATHS) + len(BAD_REQUESTS))


TRAIN_PATHS = {"pairs missing": "pairs index not found", "pairs not parquet": "not a parquet file",
               "pairs a synthesize manifest": "no split, clean_path column", "out a file": "is a file",
               "history a folder": "it is a folder"}


@pytest.mark.parametrize("case", sorted(TRAIN_PATHS))
def test_train_refuses_bad_paths_before_training(tmp_path, case):
    import pandas as pd

    index = tmp_path / "pairs.parquet"
    pd.DataFrame({"split": ["train"], "moire_path": ["moire/a.png"], "clean_path": ["clean/a.png"]}).to_parquet(index)
    paths = {"--params": str(_defaults(tmp_path)), "--data": str(tmp_path), "--pairs": str(index),
             "--out": str(tmp_path / "model"), "--history": str(tmp_path / "history.csv")}
    if case == "pairs missing":
        paths["--pairs"] = str(tmp_path / "none.parquet")
    elif case == "pairs not parquet":
        (tmp_path / "a.png").write_bytes(b"\x89PNG not really")
        paths["--pairs"] = str(tmp_path / "a.png")
    elif case == "pairs a synthesize manifest":
        pd.DataFrame({"pair_id": [0], "moire_path": ["moire/a.png"]}).to_parquet(tmp_path / "manifest.parquet")
        paths["--pairs"] = str(tmp_path / "manifest.parquet")
    elif case == "out a file":
        (tmp_path / "model").write_text("the user's")
    else:
        paths["--history"] = str(tmp_path)
    line = _one_error_line(runner.invoke(app, ["train", *[part for item in paths.items() for part in item]]))
    assert TRAIN_PATHS[case] in line
    assert not (tmp_path / "history.csv").exists() and not (tmp_path / "model").is_dir()


@pytest.mark.parametrize("args", [["bench", "synth", "--repeats", "0"], ["bench", "synth", "--pairs", "0"],
                                  ["bench", "train", "--batch", "-1"], ["bench", "train", "--steps", "0"],
                                  ["bench", "infer", "--depth", "0"], ["bench", "fly", "--channels", "0"],
                                  ["synthesize", "--out", "x", "--gallery", "-1"]], ids=" ".join)
def test_counts_below_their_least_are_refused_before_any_work(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "Invalid value for" in result.output and "Traceback" not in result.output
