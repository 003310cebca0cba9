import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import InputDataError
from pipeline.io import DIR_MODE, FILE_MODE, atomic_dir, atomic_path, read_rgb, write_json, write_png


def test_atomic_outputs_get_ordinary_permissions_not_owner_only(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    write_png(tmp_path / "b.png", np.zeros((4, 4, 3), np.uint8))
    with atomic_dir(tmp_path / "folder") as staging:
        (staging / "c.txt").write_text("c")
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == FILE_MODE
    assert stat.S_IMODE((tmp_path / "b.png").stat().st_mode) == FILE_MODE
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == DIR_MODE


def test_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "dir") as staging:
            (staging / "x").write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def _truncated_png(path, rng, height=40, width=60):
    """A PNG cut off halfway through its pixel data; the header still declares the full size."""
    write_png(path, rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_truncated_and_corrupt_images_are_input_errors(tmp_path, rng):
    truncated = _truncated_png(tmp_path / "cut.png", rng)
    with pytest.raises(InputDataError, match=r"cannot read image .*cut\.png: image file is truncated"):
        read_rgb(truncated)
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputDataError, match=r"cannot read image .*junk\.png"):
        read_rgb(tmp_path / "junk.png")


def test_images_over_the_pixel_limit_are_refused_from_the_header(tmp_path, rng):
    # Truncated, so decoding would fail: the size message proves the header alone was checked.
    path = _truncated_png(tmp_path / "big.png", rng)
    with pytest.raises(InputDataError) as info:
        read_rgb(path, max_pixels=2399)
    assert str(info.value) == (f"image from {path} is 60x40 = 2,400 pixels, over the limit of 2,399 "
                               "(infer.max_pixels, or --max-pixels)")
    write_png(tmp_path / "ok.png", np.zeros((40, 60, 3), np.uint8))
    assert read_rgb(tmp_path / "ok.png", max_pixels=2400).shape == (40, 60, 3)


@pytest.mark.parametrize("pil_limit", [2000, 1000])  # PIL warns above its limit and raises above twice it
def test_pil_decompression_bomb_warning_and_error_become_the_same_input_error(tmp_path, monkeypatch, pil_limit):
    write_png(tmp_path / "bomb.png", np.zeros((40, 60, 3), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pil_limit)
    with pytest.raises(InputDataError) as info:
        read_rgb(tmp_path / "bomb.png")
    assert str(info.value) == (f"image from {tmp_path / 'bomb.png'} is 2,400 pixels, "
                               f"over the decompression-bomb limit of {pil_limit:,}")


def test_json_outputs_write_null_for_nan_and_infinity(tmp_path):
    import json
    import math

    from pipeline.io import json_text, write_json

    data = {"psnr": math.inf, "moire_removed_low": math.nan, "real": {"a": {"ssim": 0.5, "x": [-math.inf, 1]}}}
    write_json(tmp_path / "m.json", data)
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"psnr": None, "moire_removed_low": None, "real": {"a": {"ssim": 0.5, "x": [None, 1]}}}
    assert json_text({"a": math.nan}) == '{"a": null}'
    # a file name that was not UTF-8 (kept by Python as lone surrogates): was written as "\udce9", which strict
    # readers refuse; now its byte is shown as \xe9, and any other lone surrogate escaped
    latin1 = b"caf\xe9.png".decode("utf-8", "surrogateescape")
    text = json_text({latin1: [latin1, "\ud800"]}, ensure_ascii=False)
    assert json.loads(text) == {"caf\\xe9.png": ["caf\\xe9.png", "\\ud800"]}
    text.encode("utf-8")  # valid UTF-8 throughout


def test_dark_16_bit_image_is_scaled_by_bit_depth_not_by_its_maximum(tmp_path):
    dark = np.full((4, 6), 4096, np.uint16)  # 1/16 of full scale
    Image.fromarray(dark).save(tmp_path / "dark16.png")
    assert Image.open(tmp_path / "dark16.png").mode in ("I;16", "I")
    assert read_rgb(tmp_path / "dark16.png").max() == 16  # 4096 / 65535 * 255, not white


def test_float_images_are_read_from_0_1_and_other_ranges_refused(tmp_path):
    Image.fromarray(np.full((4, 6), 0.5, np.float32)).save(tmp_path / "half.tif")
    assert read_rgb(tmp_path / "half.tif")[0, 0].tolist() == [128, 128, 128]
    Image.fromarray(np.full((4, 6), 300.0, np.float32)).save(tmp_path / "hdr.tif")
    with pytest.raises(InputDataError, match=r"hdr\.tif: float pixels in \[300, 300\]; float images are read only "
                                             r"with values in \[0, 1\]"):
        read_rgb(tmp_path / "hdr.tif")


def test_exif_orientation_is_applied(tmp_path):
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    Image.fromarray(image).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    shown = read_rgb(tmp_path / "phone.jpg")
    assert shown.shape == (40, 20, 3)
    assert shown[:18].mean() > 200 and shown[22:].mean() < 50  # the white half is now on top


def test_multi_frame_files_use_the_first_frame_and_say_so(tmp_path, caplog):
    frames = [Image.fromarray(np.full((8, 8, 3), value, np.uint8)) for value in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with caplog.at_level("WARNING", logger="pipeline.io"):
        first = read_rgb(tmp_path / "anim.gif")
    assert first.mean() < 50
    assert f"{tmp_path / 'anim.gif'} has 2 frames; using the first" in caplog.text


def test_user_named_output_folder_keeps_what_it_did_not_write(tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "plot.png").write_text("old plot")
    with atomic_dir(out) as staging:
        (staging / "plot.png").write_text("new plot")
    assert (out / "notes.txt").read_text() == "mine" and (out / "plot.png").read_text() == "new plot"
    with atomic_dir(out, whole=True) as staging:  # a stage's own output folder is replaced as a whole
        (staging / "plot.png").write_text("newer")
    assert sorted(p.name for p in out.iterdir()) == ["plot.png"]


def test_existing_outputs_are_never_replaced_without_overwrite_even_when_written_meanwhile(tmp_path):
    from pipeline.io import OutputExistsError

    target = tmp_path / "restored.png"
    with pytest.raises(OutputExistsError, match="restored.png exists"):
        with atomic_path(target, overwrite=False) as tmp:
            tmp.write_text("ours")
            target.write_text("another run's")  # written by a concurrent writer after any up-front check
    assert target.read_text() == "another run's" and list(tmp_path.iterdir()) == [target]


def test_temp_files_of_killed_runs_are_removed_on_the_next_write(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys

    script = ("import sys; from pathlib import Path; from pipeline.io import atomic_dir\n"
              "with atomic_dir(Path(sys.argv[1])) as staging:\n"
              "    (staging / 'half.png').write_text('x'); print(staging, flush=True); input()\n")
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "synthesize")], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    staging = child.stdout.readline().strip()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert os.path.isdir(staging) and f".synthesize.{socket.gethostname()}.{child.pid}-" in staging
    live = tmp_path / f".synthesize.{socket.gethostname()}.{os.getpid()}-live.tmp"  # a running writer's: kept
    live.write_text("half")
    with atomic_dir(tmp_path / "synthesize") as fresh:
        (fresh / "a.png").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "synthesize"] and live.read_text() == "half"


@pytest.mark.parametrize("case", ["file", "below_file"])
def test_output_folders_that_cannot_be_folders_are_refused_up_front(tmp_path, case):
    from pipeline.io import check_output_dir

    (tmp_path / "taken").write_text("a file")
    out = tmp_path / "taken" if case == "file" else tmp_path / "taken" / "sub"
    message = "is a file, not a folder" if case == "file" else "is a file, so nothing can be written below it"
    with pytest.raises(InputDataError, match=message):
        check_output_dir(out, "-o")
    check_output_dir(tmp_path / "new" / "deeper", "-o")  # not there yet: fine, created when written


def test_write_torch_gives_the_same_bytes_for_the_same_tensors(tmp_path):
    import torch

    from pipeline.io import write_torch

    state = {"weights": torch.arange(6.0).reshape(2, 3), "epoch": 3}
    write_torch(tmp_path / "one.pt", state)
    write_torch(tmp_path / "two.pt", state)
    assert (tmp_path / "one.pt").read_bytes() == (tmp_path / "two.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "one.pt", weights_only=True)["weights"], state["weights"])


@pytest.mark.parametrize("swap", [True, False], ids=["exchanged", "renamed aside"])
def test_a_folder_replaced_whole_is_never_left_half_deleted(tmp_path, monkeypatch, swap):
    import pipeline.io as io

    def folder(name: str, count: int):
        path = tmp_path / name
        path.mkdir()
        for i in range(count):
            (path / f"{i}.txt").write_text(name)
        return path

    old, new = folder("set", 5), folder("new", 3)
    removing = []

    def killed_midway(path, *args, **kwargs):  # a kill while the old folder is being removed: one file gone
        removing.append(path)
        next(p for p in sorted(Path(path).iterdir())).unlink()
        raise KeyboardInterrupt

    if not swap:
        monkeypatch.setattr(io, "_exchange", lambda first, second: False)
    monkeypatch.setattr(io.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        io.replace_dir(new, old)
    assert sorted(p.read_text() for p in old.iterdir()) == ["new"] * 3  # the new folder whole, in place
    assert len(removing) == 1 and Path(removing[0]).name != "set"  # only the old one, under another name


def test_a_folder_is_never_swapped_in_for_a_file(tmp_path):
    from pipeline.errors import InputDataError
    from pipeline.io import replace_dir

    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a.txt").write_text("new")
    (tmp_path / "README.md").write_text("kept")
    with pytest.raises(InputDataError, match=r"README.md is a file, not a folder; name a folder$"):
        replace_dir(tmp_path / "new", tmp_path / "README.md")
    assert (tmp_path / "README.md").read_text() == "kept" and (tmp_path / "new" / "a.txt").is_file()
