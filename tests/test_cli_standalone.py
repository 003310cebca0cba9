"""`demoire` in a folder of the user's own, outside a checkout: no params.yaml, no data/, no DVC."""

from __future__ import annotations

import pandas as pd
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_params
from pipeline.data.pairs_index import build_pairs_index
from tests.test_cli import blocked_registry  # noqa: F401 (a fixture)

runner = CliRunner()
TINY = {"train": {"epochs": 1, "patch_size": 32, "batch_size": 4, "channels": 8, "depth": 2},
        "preprocess": {"val_fraction": 0.2, "test_fraction": 0.2}}


def test_train_outside_a_checkout_splits_the_synthetic_set_as_the_preprocess_stage_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'runs.db'}")
    assert runner.invoke(app, ["-q", "synthesize", "--out", "syn", "--n", "12", "--size", "64"]).exit_code == 0
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    result = runner.invoke(app, ["train", "--params", "tiny.yaml", "--data", "syn", "--out", "model"])
    assert result.exit_code == 0, result.output
    index = pd.read_parquet(tmp_path / "model" / "pairs.parquet")
    expected = build_pairs_index(load_params(tmp_path / "tiny.yaml"), tmp_path / "syn").pairs
    pd.testing.assert_frame_equal(index, expected, check_dtype=False)  # parquet reads strings back as such
    assert set(index["split"]) == {"train", "val", "test"}
    assert "split syn: " in result.output and "-> model/pairs.parquet" in result.output
    assert "no params.yaml here" not in result.output  # --params named one
    # The history follows --out, and nothing is written where a checkout keeps its stages' outputs.
    assert len(pd.read_csv(tmp_path / "model" / "history.csv")) == 1
    assert (tmp_path / "model" / "model.pt").is_file() and not (tmp_path / "data").exists()
    # a second run into the folder while one trains there (here: one holding its lock) stops at once
    from pipeline.io import sole_writer

    with sole_writer(tmp_path / "model", "demoire train run"):
        second = runner.invoke(app, ["train", "--params", "tiny.yaml", "--data", "syn", "--out", "model"])
    assert second.exit_code == 2 and "another demoire train run is writing model (it holds " in second.output


def test_train_says_what_to_give_it_when_there_is_nothing_to_train_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pairs").mkdir()
    nothing = runner.invoke(app, ["train"])
    assert nothing.exit_code == 2
    assert nothing.output.strip() == ("error: no pairs to train on: data/synthesize is not a synthetic set (no "
                                      "manifest.parquet); write one with `demoire synthesize --out data/synthesize` "
                                      "or name it with --data")
    spaced = runner.invoke(app, ["train", "--data", "my set"])  # the command it suggests, quoted to paste
    assert "write one with `demoire synthesize --out 'my set'` or name it with --data" in spaced.output
    folder = runner.invoke(app, ["train", "--pairs", "pairs"])
    assert folder.exit_code == 2 and folder.output.startswith("error: --pairs pairs is a folder, not a pairs index")
    assert not (tmp_path / "data").exists()


def test_check_params_without_a_file_shows_the_defaults_and_validates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checked = runner.invoke(app, ["check-params"])
    assert checked.exit_code == 2
    assert checked.output.strip() == ("error: params.yaml: file not found here; pass --params FILE "
                                      "(`demoire check-params --show` prints the defaults)")
    shown = runner.invoke(app, ["check-params", "--show"])
    assert shown.exit_code == 0 and yaml.safe_load(shown.output)["seed"] == 2024
    assert runner.invoke(app, ["check-params", "--json"]).exit_code == 2  # a script checks a file: none is an error


def test_model_commands_outside_a_checkout_say_what_their_default_model_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pairs").mkdir()
    hint = ("error: no model in data/train, the default in a checkout once `dvc repro` or `demoire train` has run; "
            "pass --model FOLDER, models:/NAME@ALIAS or an exported file")
    for command in (["predict", "x.png", "-o", "out"], ["evaluate", "--pairs", "pairs"], ["serve"]):
        result = runner.invoke(app, command)
        assert (result.exit_code, result.output.strip()) == (2, hint), command
    result = runner.invoke(app, ["export", "--format", "torchscript", "-o", "m.pt"])  # exports from no exported file
    assert (result.exit_code, result.output.strip()) == (2, hint.removesuffix(" or an exported file").replace(
        "FOLDER,", "FOLDER or"))


def test_promote_outside_a_checkout_says_how_to_name_the_gate_set(blocked_registry):  # noqa: F811 (the fixture)
    from pipeline.registry.promotion import GATE_SET_TAG

    blocked_registry.set_model_version_tag("m", "2", GATE_SET_TAG, "another")  # scored elsewhere: re-score here
    result = runner.invoke(app, ["promote", "--model-name", "m", "--dry-run"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: the gate set is the test split of the pairs index data/preprocess/pairs.parquet, which is not here: "
        "run this in the project's checkout after `dvc repro preprocess`, or pass --data and --pairs (a synthetic "
        "set and its index: `demoire train` writes OUT/pairs.parquet)")
