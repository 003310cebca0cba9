"""demoire export: ONNX under onnxruntime and TorchScript match PyTorch on odd sizes, and predict runs them tiled."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli.common import infer_params
from pipeline.export import ONNX_OPSET, TOLERANCE, ExportedModel
from pipeline.inference import restore_image
from pipeline.io import read_rgb, write_png
from pipeline.models import ModelSpec, build_model, save_model

runner = CliRunner()


@pytest.fixture
def model_dir(tmp_path):
    spec = ModelSpec("unet", 8, 2)
    save_model(build_model(spec, seed=3), spec, tmp_path / "model")
    return tmp_path / "model"


@pytest.mark.parametrize("fmt, suffix", [("onnx", ".onnx"), ("torchscript", ".pt")])
def test_export_matches_pytorch_on_odd_sizes_and_predict_runs_it_tiled(model_dir, tmp_path, rng, fmt, suffix):
    out = tmp_path / f"model{suffix}"
    result = runner.invoke(app, ["export", "--model", str(model_dir), "--format", fmt, "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["file"] == str(out) and report["format"] == fmt and report["architecture"] == "unet"
    assert report["opset"] == (ONNX_OPSET if fmt == "onnx" else None)
    assert 0 <= report["max_abs_difference"] <= TOLERANCE and report["checked_sizes"] == [[37, 53], [101, 67]]
    # two exports, to other files (other temp names: host, process), in fresh processes as a user runs them
    # (within one process TorchScript numbers the classes it traces again): the same bytes
    copies = [tmp_path / name / f"model{suffix}" for name in ("one", "two")]
    for copy in copies:
        subprocess.run([sys.executable, "-m", "pipeline.cli", "export", "--model", str(model_dir), "--format", fmt,
                        "-o", str(copy)], check=True, capture_output=True)
    assert copies[0].read_bytes() == copies[1].read_bytes()
    if fmt == "onnx":
        graph = onnx.load(str(out))
        assert graph.opset_import[0].version == ONNX_OPSET
        dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
        assert dims == ["batch", 3, "height", "width"]

    # the exported file through predict, tiled (75x131 in tiles of 48): what PyTorch gives, within a level
    image = rng.integers(0, 256, (75, 131, 3), dtype=np.uint8)
    write_png(tmp_path / "in" / "odd.png", image)
    tiling = ["--tile", "48", "--overlap", "8", "--device", "cpu"]
    ran = runner.invoke(app, ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(out), *tiling])
    assert ran.exit_code == 0, ran.output
    from pipeline.models import load_model

    expected = restore_image(load_model(model_dir)[0], image, "cpu", 48, 8, falloff=infer_params(None).falloff)
    assert np.abs(read_rgb(tmp_path / "out" / "odd.png").astype(int) - expected).max() <= 1
    assert ExportedModel(out).spec == ModelSpec("unet", 8, 2) and ExportedModel(out).multiple == 4


def test_mscale_exports_to_onnx(tmp_path):
    spec = ModelSpec("mscale", 8, 1)
    save_model(build_model(spec, seed=0), spec, tmp_path / "model")
    result = runner.invoke(app, ["export", "--model", str(tmp_path / "model"), "--format", "onnx",
                                 "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert f"opset {ONNX_OPSET}, dynamic height and width" in result.output and "(tolerance 0.0001)" in result.output


def test_export_refuses_in_one_line_and_keeps_nothing(model_dir, tmp_path):
    def export(*args):
        return runner.invoke(app, ["export", "--model", str(model_dir), *args])

    wrong = export("--format", "onnx", "-o", str(tmp_path / "m.pt"))
    assert wrong.exit_code == 2 and "-o " + str(tmp_path / "m.pt") + ": an ONNX file must end in .onnx" in wrong.output
    bad = export("--format", "tflite", "-o", str(tmp_path / "m.tflite"))
    assert bad.exit_code == 2 and "'tflite' is not one of 'onnx', 'torchscript'" in bad.output
    (tmp_path / "taken.onnx").write_text("keep me")
    taken = export("--format", "onnx", "-o", str(tmp_path / "taken.onnx"))
    assert taken.exit_code == 2 and "exists; choose another -o or pass --overwrite" in taken.output
    assert (tmp_path / "taken.onnx").read_text() == "keep me"
    done = export("--format", "ONNX", "-o", str(tmp_path / "m.onnx"), "--json")  # in any case, as users type it
    assert done.exit_code == 0 and json.loads(done.stdout)["format"] == "onnx"
    again = runner.invoke(app, ["export", "--model", str(tmp_path / "m.onnx"), "--format", "onnx",
                                "-o", str(tmp_path / "n.onnx")])
    assert again.exit_code == 2 and "is already exported" in again.output
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    junk = runner.invoke(app, ["predict", str(model_dir), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "junk.onnx")])
    assert junk.exit_code == 2 and f"cannot load ONNX model {tmp_path / 'junk.onnx'}" in junk.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.onnx", "m.onnx", "model", "taken.onnx"]


def test_exported_metadata_with_a_size_step_below_1_is_refused_in_one_line(model_dir, tmp_path):
    assert runner.invoke(app, ["export", "--model", str(model_dir), "--format", "onnx",
                               "-o", str(tmp_path / "m.onnx")]).exit_code == 0
    graph = onnx.load(str(tmp_path / "m.onnx"))
    for prop in graph.metadata_props:  # as a hand edit would leave it: padding to a step of 0 divided by zero
        if prop.key == "demoire":
            prop.value = json.dumps({**json.loads(prop.value), "multiple": 0})
    onnx.save(graph, str(tmp_path / "edited.onnx"))
    write_png(tmp_path / "a.png", np.zeros((20, 20, 3), np.uint8))
    result = runner.invoke(app, ["predict", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"),
                                 "--model", str(tmp_path / "edited.onnx")])
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'edited.onnx'}: its 'demoire' metadata is not demoire export's (multiple below 1)" in (
        result.output)
    assert "Traceback" not in result.output


def test_export_keeps_the_model_folder_and_the_registry_version_it_came_from(model_dir, tmp_path):
    import shutil

    weights = (model_dir / "model.pt").read_bytes()
    into = runner.invoke(app, ["export", "--model", str(model_dir), "--format", "torchscript",
                               "-o", str(model_dir / "model.pt"), "--overwrite"])
    assert into.exit_code == 2 and f"-o {model_dir / 'model.pt'} is a file of the model folder --model" in into.output
    assert (model_dir / "model.pt").read_bytes() == weights
    as_file = runner.invoke(app, ["export", "--model", str(model_dir / "model.pt"), "--format", "onnx",
                                  "-o", str(tmp_path / "m.onnx")])
    assert as_file.exit_code == 2
    assert (f"{model_dir / 'model.pt'} holds a model folder's weights, not a TorchScript export: pass --model "
            f"{model_dir}") in as_file.output
    run_uri = runner.invoke(app, ["export", "--model", "runs:/0123/model", "--format", "onnx",
                                  "-o", str(tmp_path / "r.onnx")])
    assert run_uri.exit_code == 2 and "--model runs:/0123/model: runs:/ URIs are not taken" in run_uri.output
    # weights that are a link into a cache (DVC's symlink cache type): the link in the folder is what -o replaces
    linked = tmp_path / "linked"
    linked.mkdir()
    shutil.copy(model_dir / "model.json", linked)
    (linked / "model.pt").symlink_to(model_dir / "model.pt")
    into_link = runner.invoke(app, ["export", "--model", str(linked), "--format", "torchscript",
                                    "-o", str(linked / "model.pt"), "--overwrite"])
    assert into_link.exit_code == 2 and "is a file of the model folder" in into_link.output
    assert (linked / "model.pt").is_symlink() and (model_dir / "model.pt").read_bytes() == weights
    assert runner.invoke(app, ["export", "--model", str(model_dir), "--format", "onnx",
                               "-o", str(tmp_path / "m.onnx")]).exit_code == 0
    metadata = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}["demoire"]
    assert json.loads(metadata)["source"] is None  # a folder's local path is not written into a shared file
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_killed_export_leaves_no_temp_file(model_dir, tmp_path):
    import signal
    import time

    out = tmp_path / "out"
    # -X faulthandler: a stack if it dies of a signal again (SIGSEGV in two CI runs, from a SIGTERM inside onnx's
    # native init, before import_native held signals there)
    process = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "pipeline.cli", "export", "--model",
                                str(model_dir), "--format", "onnx", "-o", str(out / "m.onnx")],
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob(".m.onnx.*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # until the temp file is there: the export is under way
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM, process.stderr.read()
    assert list(out.iterdir()) == []


def test_onnx_export_without_onnxruntime_stops_before_any_work(model_dir, tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a))
    result = runner.invoke(app, ["export", "--model", str(model_dir), "--format", "onnx",
                                 "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert ("ONNX export needs onnxruntime (onnx writes the file, onnxruntime checks it): pip install "
            "'demoire[export]'") in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_an_export_keeps_a_file_another_run_wrote_meanwhile_unless_overwrite(model_dir, tmp_path):
    from pipeline.export import export_model
    from pipeline.inference import spatial_multiple
    from pipeline.io import OutputExistsError
    from pipeline.models import load_model

    net, spec = load_model(model_dir)
    (tmp_path / "m.pt").write_text("another run's export")  # after this run's check that -o was free
    with pytest.raises(OutputExistsError, match="m.pt exists"):
        export_model(net, spec, "torchscript", tmp_path / "m.pt", spatial_multiple(net), overwrite=False)
    assert (tmp_path / "m.pt").read_text() == "another run's export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "model"]


# exports the model folder argv[1] to argv[2] with the `pipeline` package found first on sys.path, and says which
EXPORT_FROM_CHECKOUT = """
import sys
from pathlib import Path

import pipeline
from pipeline.export import export_model
from pipeline.inference import spatial_multiple
from pipeline.models import load_model

net, spec = load_model(Path(sys.argv[1]))
export_model(net, spec, "torchscript", Path(sys.argv[2]), spatial_multiple(net))
print(pipeline.__file__)
"""


def test_torchscript_bytes_do_not_depend_on_where_the_checkout_lives(model_dir, tmp_path):
    import os
    import shutil
    from pathlib import Path

    import torch

    import pipeline
    from pipeline.models import load_model

    # the tracer records the Python stack of every op, absolute file names included: two copies of the code at other
    # paths (of other lengths), each exporting in a process of its own
    roots = [tmp_path / "checkout", tmp_path / "elsewhere" / "another-checkout"]
    processes = []
    for root in roots:
        shutil.copytree(Path(pipeline.__file__).parent, root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
        env = {**os.environ, "PYTHONPATH": str(root)}
        processes.append(subprocess.Popen([sys.executable, "-c", EXPORT_FROM_CHECKOUT, str(model_dir), "model.pt"],
                                          cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for root, process in zip(roots, processes):
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert Path(stdout.strip()).is_relative_to(root)  # the copy ran, not the installed checkout
    exported = [(root / "model.pt").read_bytes() for root in roots]
    assert exported[0] == exported[1]
    assert str(tmp_path).encode() not in exported[0] and sys.prefix.encode() not in exported[0]  # nor the venv's
    # and the file computes what the model does, to the bit, on a size on its grid
    net = load_model(model_dir)[0].eval()
    image = torch.rand(2, 3, 32, 44, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(torch.jit.load(str(roots[0] / "model.pt"))(image), net(image))
