"""The benchmark scripts refuse bad input in one line (exit 2) before any work, as `demoire` does."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.io import read_rgb, write_png

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pairs(tmp_path, rng):
    """Two tiny pairs in the moire/ + clean/ layout."""
    for name in ("a_1.png", "a_2.png"):
        for side in ("moire", "clean"):
            write_png(tmp_path / "pairs" / side / name, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return tmp_path / "pairs"


def _script(name: str, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT / "benchmarks" / name), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_a_group_without_a_glob_and_a_glob_matching_nothing_are_one_line(pairs):
    assert _one_line(_script("classical_baselines.py", pairs, "--group", "fhdmi")).endswith(
        "argument --group: 'fhdmi': give NAME=GLOB, e.g. fhdmi='fhdmi_*'")
    assert _one_line(_script("real_residuals.py", pairs, "--group", "x=zz*")) == (
        f"error: --group x=zz*: no pair of {pairs} matches")
    assert _one_line(_script("classical_baselines.py", pairs.parent / "missing")).startswith(
        "error: dataset folder not found")


def test_outputs_that_cannot_be_written_are_refused_before_any_work(pairs, tmp_path):
    photo, folder = pairs / "moire" / "a_1.png", tmp_path / "shown.jpg"
    folder.mkdir()
    assert _one_line(_script("real_gallery.py", photo, "--out", folder)).endswith(f"{folder} is a folder; name a file")
    assert _one_line(_script("falloff_gallery.py", photo, "--out", tmp_path / "g.png")).endswith(
        "the gallery is a JPEG; name a .jpg file")
    assert _one_line(_script("real_gallery.py", photo, "--out", tmp_path / "g.jpg", "--quality", "0")).endswith(
        "0: a JPEG quality is 1–100")
    assert _one_line(_script("synth_statistics.py", "--out", tmp_path / "s.json", "--against", tmp_path / "none.json")
                     ).startswith("synth_statistics.py: error: --against")
    assert not (tmp_path / "g.jpg").exists() and not (tmp_path / "s.json").exists()


def test_real_transfer_checks_its_real_sets_levers_and_params_before_training(pairs, tmp_path):
    out = tmp_path / "figures.json"
    missing = _script("real_transfer.py", "--real", pairs.parent / "missing", "--out", out)
    assert "dataset folder not found" in _one_line(missing)
    unmatched = _script("real_transfer.py", "--real", pairs, "--group", "g=zz*", "--out", out)
    assert "matches" in _one_line(unmatched) and "zz*" in _one_line(unmatched)
    assert _one_line(_script("real_transfer.py", "--real", pairs, "--lever", "nosuch", "--out", out)).endswith(
        "--lever 'nosuch': not a lever; `--list` names them")
    assert _one_line(_script("real_transfer.py", "--real", pairs, "--set", "train.epochs=0", "--out", out)).startswith(
        "error: lever: train.epochs = 0")
    assert not out.exists()


@pytest.fixture
def tiny_params(tmp_path):
    """A params.yaml of four 32² pairs."""
    path = tmp_path / "params.yaml"
    path.write_text("seed: 3\nsynthesize:\n  size: 32\n  n_pairs: 4\ntrain:\n  patch_size: 32\n")
    return path


def test_render_trace_finds_the_pair_and_the_ops_where_two_renders_part(tiny_params, tmp_path):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    assert _script("render_trace.py", "--params", tiny_params, "--out", first).returncode == 0
    same = _script("render_trace.py", "--params", tiny_params, "--out", second, "--against", first)
    assert (same.returncode, same.stdout.splitlines()[-1]) == (0, "all 4 pairs the same, step by step")
    assert second.read_text() == first.read_text()  # the machine's load is not in it: the same file

    # another machine's file, as if pair 2 had parted from this one's render in its second window of ops, pair 3 in
    # the ops after its last full window (the rounding to bytes), and pair 0 outside torch (same ops, other pixels)
    other = json.loads(first.read_text())
    pairs = other["pairs"]
    pairs[2]["moire"], pairs[3]["clean"], pairs[0]["moire"] = "00000000", "00000000", "00000000"
    pairs[2]["checkpoints"][1:] = ["00000000"] * (len(pairs[2]["checkpoints"]) - 1)
    pairs[3]["checkpoints"][-1] = "00000000"
    first.write_text(json.dumps(other))
    parted = _script("render_trace.py", "--params", tiny_params, "--out", second, "--against", first)
    lines = parted.stdout.splitlines()
    assert parted.returncode == 1 and lines[1].startswith("pair 0: moire differ (")
    assert lines[2] == "  no checkpoint differs: every op's result is the same, so a step outside torch parts them"
    assert lines[3].startswith("pair 2: moire differ (") and lines[4] == "  they first part within ops 128–255:"
    window = lines[5:5 + 128]
    assert [line.split()[0] for line in window] == [str(op) for op in range(128, 256)]
    assert any("pipeline/moire/" in line for line in window)
    ops = pairs[3]["ops"]
    tail = (len(pairs[3]["checkpoints"]) - 1) * 128
    assert ops % 128 and lines[5 + 128].startswith("pair 3: clean differ (")
    assert lines[6 + 128] == f"  they first part within ops {tail}–{ops - 1}:" and len(lines) == 7 + 128 + ops - tail
    assert any("pipeline/moire/isp.py" in line for line in lines[7 + 128:])  # the rounding to 8 bits among them


def _in_process(name: str, *args: object) -> None:
    """Run a benchmark script in this process (no interpreter to start for each case); it must exit 2, a refusal."""
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as exited:
        patch.setattr(sys, "argv", [name, *map(str, args)])
        patch.setattr(sys, "path", list(sys.path))  # the script puts the project first on it
        runpy.run_path(str(PROJECT / "benchmarks" / name), run_name="__main__")
    assert exited.value.code == 2


def test_render_trace_refuses_a_file_it_did_not_write_before_rendering(tiny_params, tmp_path, capsys):
    (tmp_path / "other.json").write_text('{"pairs": 3}')
    assert _one_line(_script("render_trace.py", "--params", tiny_params, "--out", tmp_path / "t.json",
                             "--against", tmp_path / "other.json")).startswith(
        f"error: --against {tmp_path / 'other.json'}: not a digests file of this script")
    pair = {"moire": "0", "clean": "0", "record": "0", "ops": 1, "checkpoints": []}
    for written, refusal in (({"window": 64, "pairs": [pair]}, "(checkpoints every 64 ops, not every 128)"),
                             ({"window": 128, "pairs": []}, "(no pairs, or a pair without the digests this script "
                                                           "writes)"),
                             ({"window": 128, "pairs": [{**pair, "checkpoints": None}]}, "writes)"),
                             ({"window": 128, "params": "other", "pairs": [pair]},
                              f"was written for other synthesize params or seed than {tiny_params}'s; compare "
                              "renders of the same params")):
        (tmp_path / "other.json").write_text(json.dumps(written))
        _in_process("render_trace.py", "--params", tiny_params, "--out", tmp_path / "t.json",
                    "--against", tmp_path / "other.json")
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith(refusal)
    _in_process("render_trace.py", "--out", tmp_path / "t.json", "--pairs", "0")
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("argument --pairs: 0: give at least 1")
    assert not (tmp_path / "t.json").exists()


def _image(height: int, width: int, offset: int) -> np.ndarray:
    """Each pixel's row and column in its red and green, `offset` in its blue: where a crop came from shows."""
    y, x = np.mgrid[:height, :width]
    return np.stack([y, x, np.full_like(y, offset)], axis=2).astype(np.uint8)


def test_crop_pairs_cuts_five_crops_of_the_same_place_and_names_the_pairs_it_skips(tmp_path):
    pairs = tmp_path / "pairs"
    for name, (height, width) in {"big.png": (40, 60), "small.png": (20, 60)}.items():
        write_png(pairs / "moire" / name, _image(height, width, 1))
        write_png(pairs / "clean" / name, _image(height, width, 2))
    (pairs / "moire" / "broken.png").write_bytes(b"not a png")
    (pairs / "clean" / "broken.png").write_bytes(b"not a png")

    done = _script("crop_pairs.py", pairs, "--size", 30, "--out", tmp_path / "crops")

    assert done.returncode == 1, done.stderr  # done, with pairs skipped
    assert done.stdout.strip() == f"5 crops of 1 pair in {tmp_path / 'crops'} (2 skipped)"
    assert "skipped small.png: 60×20 is smaller than 30" in done.stderr and "skipped broken.png" in done.stderr
    corners = {"tl": (0, 0), "tr": (0, 30), "bl": (10, 0), "br": (10, 30), "c": (5, 15)}
    for place, (top, left) in corners.items():
        moire = read_rgb(tmp_path / "crops" / "moire" / f"big_{place}.png")
        clean = read_rgb(tmp_path / "crops" / "clean" / f"big_{place}.png")
        assert moire.shape == clean.shape == (30, 30, 3)
        assert (moire[0, 0, 0], moire[0, 0, 1], moire[0, 0, 2]) == (top, left, 1)
        assert (clean[0, 0, 0], clean[0, 0, 1], clean[0, 0, 2]) == (top, left, 2)
    assert sorted(p.name for p in (tmp_path / "crops" / "moire").iterdir()) == sorted(f"big_{p}.png" for p in corners)

    again = _script("crop_pairs.py", pairs, "--size", 30, "--out", tmp_path / "crops")
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"error: --out {tmp_path / 'crops'} is not empty; name a new or empty folder"]
    too_large = _script("crop_pairs.py", pairs, "--size", 41, "--out", tmp_path / "none")
    assert too_large.returncode == 2 and too_large.stderr.strip().splitlines()[-1] == (
        f"error: no pair of {pairs} is at least 41 px on each side: nothing written")
    assert not (tmp_path / "none").exists()
