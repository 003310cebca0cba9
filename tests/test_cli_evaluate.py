"""`demoire evaluate` at scale: per-image CSV written as pairs are scored, progress with ETA unless -q."""

import json
import os
import re
import signal
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.models import ModelSpec, build_model, save_model
from tests.evaluation.test_real_sets import real_looking_pairs

runner = CliRunner()


@pytest.fixture
def args(tmp_path, rng):
    spec = ModelSpec("unet", 8, 2)
    save_model(build_model(spec, seed=0), spec, tmp_path / "model")
    pairs = real_looking_pairs(tmp_path / "pairs", rng, ["a.png", "b.png", "c.png"])
    return ["evaluate", "--model", str(tmp_path / "model"), "--pairs", str(pairs), "--device", "cpu",
            "--tile", "32", "--overlap", "8"]


def test_csv_holds_one_row_per_pair_and_the_means_printed(args, tmp_path, monkeypatch):
    monkeypatch.setenv("DEMOIRE_PROGRESS", "bar")
    out = tmp_path / "scores" / "per_image.csv"
    result = runner.invoke(app, [*args, "--csv", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    per_image = pd.read_csv(out)
    assert list(per_image.image) == ["a.png", "b.png", "c.png"] and summary["count"] == 3
    for metric in ("psnr", "tone_psnr", "ssim", "identity_psnr"):
        assert per_image[metric].mean() == pytest.approx(summary[metric], abs=1e-6)  # CSV: 6 decimals
    # no temp or partial file left; the lock file stays, empty, as synthesize's does
    assert sorted(p.name for p in out.parent.iterdir()) == [".per_image.csv.lock", "per_image.csv"]
    assert "scoring pairs" in result.stderr and "3/3" in result.stderr and "ETA" in result.stderr


def test_quiet_shows_no_progress_and_a_folder_as_csv_is_one_error(args, tmp_path, monkeypatch):
    monkeypatch.setenv("DEMOIRE_PROGRESS", "bar")
    quiet = runner.invoke(app, ["-q", *args, "--json"])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""
    bad = runner.invoke(app, [*args, "--csv", str(tmp_path)])
    assert bad.exit_code == 2 and bad.output.strip() == f"error: --csv {tmp_path} is a folder; name a file"



def test_an_existing_csv_is_replaced_only_when_it_holds_per_image_scores(args, tmp_path):
    photo = tmp_path / "pairs" / "moire" / "a.png"
    before = photo.read_bytes()
    into_photo = runner.invoke(app, [*args, "--csv", str(photo)])
    assert into_photo.exit_code == 2, into_photo.output
    assert (f"error: --csv {photo} exists and is not a per-image scores CSV of demoire evaluate; name another "
            "file") in into_photo.output
    assert photo.read_bytes() == before and sorted(p.name for p in photo.parent.iterdir()) == [
        "a.png", "b.png", "c.png"]  # no lock file left in the dataset either
    scores = tmp_path / "scores.csv"
    for _ in range(2):  # a rerun replaces the CSV an earlier run wrote
        assert runner.invoke(app, [*args, "--csv", str(scores)]).exit_code == 0
    assert len(pd.read_csv(scores)) == 3


def test_off_a_terminal_progress_comes_as_log_lines_without_verbose(args, monkeypatch):
    monkeypatch.setenv("DEMOIRE_PROGRESS", "log")
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert "scoring pairs: 3/3 pairs (100%)" in result.stderr  # the final line, whatever the interval
    assert runner.invoke(app, ["-q", *args, "--json"]).stderr == ""


def test_the_same_command_after_a_kill_scores_only_the_pairs_left(args, tmp_path):
    """SIGKILL once two rows are on disk (a real kill, in a child process), then the same command: the third pair
    alone is scored, and the CSV and means are an uninterrupted run's."""
    def demoire(csv, kill_at=None):
        env = {**os.environ, "DEMOIRE_PROGRESS": "log", **({"DEMOIRE_KILL_AT": kill_at} if kill_at else {})}
        return subprocess.run([sys.executable, "-m", "pipeline.cli", *args, "--csv", str(csv), "--json"],
                              capture_output=True, text=True, env=env, timeout=300)

    whole = demoire(tmp_path / "whole.csv")
    assert whole.returncode == 0, whole.stderr
    csv = tmp_path / "scores" / "per_image.csv"
    killed = demoire(csv, kill_at="evaluate.row_2")
    assert killed.returncode == -signal.SIGKILL and not csv.exists()
    resumed = demoire(csv)
    assert resumed.returncode == 0, resumed.stderr
    partial = r"\.per_image\.csv\.partial-[0-9a-f]{16}"
    assert re.search(rf"resuming: 2 of 3 pairs already scored in .*{partial}", resumed.stderr)
    assert "scoring pairs: 3/3 pairs (100%)" in resumed.stderr
    assert csv.read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert json.loads(resumed.stdout.splitlines()[-1]) == json.loads(whole.stdout.splitlines()[-1])
    assert sorted(p.name for p in csv.parent.iterdir()) == [".per_image.csv.lock", "per_image.csv"]
