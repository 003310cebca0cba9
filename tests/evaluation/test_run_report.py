"""`demoire report`: one offline HTML file from the latest run's outputs."""

import base64
import re

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.io import write_json, write_png

runner = CliRunner()


def _run_outputs(root, rng):
    write_json(root / "data/evaluate/metrics.json", {"count": 3, "psnr": 24.1234, "ssim": 0.8123, "mse": 0.0042,
                                                     "identity_psnr": 18.5, "identity_ssim": 0.6, "identity_mse": 0.014,
                                                     "psnr_gain_over_identity": 5.6234})
    (root / "data/train").mkdir(parents=True)
    pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.05, 0.03, 0.02], "val_loss": [0.06, 0.04, 0.035],
                  "val_psnr": [19.0, 21.5, 23.25]}).to_csv(root / "data/train/history.csv", index=False)
    write_png(root / "data/evaluate/grid.png", rng.integers(0, 256, (30, 90, 3), dtype=np.uint8))
    scores = {"psnr": 24.1234, "ssim": 0.8123, "mse": 0.0042, "gate_set": "ab12" * 16}
    write_json(root / "data/register/registration.json", {
        "model_name": "demoire", "version": "2", "promote": True, "reason": "beats champion v1: <details>",
        "run_id": "r1", "tracking_uri": "sqlite:///x/mlflow.db", "gate_set": "ab12" * 16, "margin_db": 0.05,
        "ssim_tolerance": 0.005, "champion_version": "1", "champion_psnr": 23.0,
        "challenger": {"version": "2", "rescored": False, **scores},
        "champion": {"version": "1", "rescored": True, **scores, "psnr": 23.0}})


def test_report_is_one_offline_html_file_with_metrics_curves_grid_and_decision(tmp_path, monkeypatch, rng):
    monkeypatch.chdir(tmp_path)
    _run_outputs(tmp_path, rng)
    result = runner.invoke(app, ["report", "-o", "out/report.html"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out/report.html").read_text()
    for text in ("24.1234", "18.5000", "0.8123", "+5.6234", "val PSNR 23.25 dB", "demoire v2: promoted to champion at registration",
                 "champion v1 (re-scored)", "+1.1234", "ab12ab12", "beats champion v1: &lt;details&gt;"):
        assert text in page, text
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) == 2 and all(src.startswith("data:image/png;base64,") for src in images)
    assert base64.b64decode(images[0].split(",", 1)[1]).startswith(b"\x89PNG")
    assert (tmp_path / "data/evaluate/grid.png").read_bytes() == base64.b64decode(images[1].split(",", 1)[1])
    assert not re.search(r"https?://", page) and "<link" not in page and "<script" not in page
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report.html"]


def test_a_missing_input_is_one_line_naming_it_and_its_command(tmp_path, monkeypatch, rng):
    monkeypatch.chdir(tmp_path)
    _run_outputs(tmp_path, rng)
    (tmp_path / "data/register/registration.json").unlink()
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 2 and not (tmp_path / "report.html").exists()
    assert result.output.strip() == "error: data/register/registration.json not found; `dvc repro register` writes it"


def test_report_has_a_section_per_real_set_and_names_the_gate_that_decided(tmp_path, monkeypatch, rng):
    import json

    monkeypatch.chdir(tmp_path)
    _run_outputs(tmp_path, rng)
    metrics = json.loads((tmp_path / "data/evaluate/metrics.json").read_text())
    real = {"count": 5, "skipped": 1, "psnr": 21.25, "identity_psnr": 20.5, "tone_psnr": 26.125, "identity_tone_psnr": 24.0,
            "ssim": 0.75, "identity_ssim": 0.7, "tone_ssim": 0.8125, "identity_tone_ssim": 0.78, "mse": 0.008,
            "identity_mse": 0.009, "moire_removed_low": 0.125, "moire_removed_mid": 0.5, "moire_removed_high": None}
    metrics |= {"tone_psnr": 27.5, "identity_tone_psnr": 25.0, "tone_ssim": 0.9, "identity_tone_ssim": 0.85,
                "moire_removed_low": 0.25, "moire_removed_mid": 0.75, "moire_removed_high": -0.0625,
                "real": {"fhdmi": real, "tip2018": {**real, "count": 6, "skipped": 0}},
                "real_mean": {"psnr": 21.25, "tone_psnr": 26.125, "ssim": 0.75, "mse": 0.008}, "real_gate_set": "cd34" * 16}
    write_json(tmp_path / "data/evaluate/metrics.json", metrics)
    record = json.loads((tmp_path / "data/register/registration.json").read_text())
    scores = {"psnr": 21.25, "tone_psnr": 26.125, "ssim": 0.75, "mse": 0.008, "gate_set": "cd34" * 16, "kind": "real"}
    record |= {"gate_kind": "real", "gate_set": "cd34" * 16, "challenger": {"version": "2", "rescored": False, **scores},
               "champion": {"version": "1", "rescored": True, **scores, "tone_psnr": 26.0}}
    write_json(tmp_path / "data/register/registration.json", record)
    result = runner.invoke(app, ["report", "-o", "report.html"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    for text in ("tone-aligned PSNR (dB)", "27.5000", "+2.5000", "low (&lt; 1/32 cycles/px): 25.0 %", "high (≥ 1/8): -6.2 %",
                 "<h2>Real photos</h2>", "<h3>fhdmi (5 pairs, 1 skipped)</h3>", "<h3>tip2018 (6 pairs, 0 skipped)</h3>",
                 "26.1250", "+2.1250", "mid (1/32 to 1/8): 50.0 %", "high (≥ 1/8): -", "tone-aligned PSNR 26.12 dB",
                 "gate set cd34cd34cd34", "real: decided on the real sets", "real tone-aligned PSNR", "+0.1250",
                 "margin (dB) on real PSNR and real tone-aligned PSNR"):
        assert text in page, text


def test_inputs_lacking_what_the_report_quotes_are_one_line_naming_file_and_keys(tmp_path, monkeypatch, rng):
    import json

    monkeypatch.chdir(tmp_path)
    _run_outputs(tmp_path, rng)
    metrics_path = tmp_path / "data/evaluate/metrics.json"
    metrics = json.loads(metrics_path.read_text())
    write_json(metrics_path, {k: v for k, v in metrics.items() if k != "identity_psnr"})
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 2 and not (tmp_path / "report.html").exists()
    assert result.output.strip() == ("error: data/evaluate/metrics.json lacks identity_psnr: not what `dvc repro "
                                     "evaluate` writes now (an older or edited file?); rerun it")
    write_json(metrics_path, metrics | {"real": {"fhdmi": {"psnr": 20.0}}, "real_mean": {"psnr": 20.0}})
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 2 and "lacks real_gate_set, real_mean.tone_psnr, real_mean.ssim, real.fhdmi.count:" \
        in result.output
    write_json(metrics_path, metrics)
    registration_path = tmp_path / "data/register/registration.json"
    record = json.loads(registration_path.read_text())
    write_json(registration_path, record | {"gate_kind": "lpips"})
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 2 and result.output.strip() == (
        "error: data/register/registration.json: gate_kind 'lpips' is not one of synthetic, real; "
        "`dvc repro register` writes it")
    del record["champion"]["ssim"]
    write_json(registration_path, record)
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 2 and "registration.json lacks champion.ssim:" in result.output
    assert not (tmp_path / "report.html").exists()


def test_quiet_report_prints_nothing_and_json_still_prints_its_object(tmp_path, monkeypatch, rng):
    import json

    monkeypatch.chdir(tmp_path)
    _run_outputs(tmp_path, rng)
    result = runner.invoke(app, ["-q", "report"])
    assert result.exit_code == 0 and result.output == "" and (tmp_path / "report.html").is_file()
    result = runner.invoke(app, ["-q", "report", "--json"])
    assert json.loads(result.output) == {"out": "report.html", "bytes": (tmp_path / "report.html").stat().st_size}


def test_a_registration_of_another_evaluation_is_flagged_in_the_report_and_on_stderr(tmp_path, monkeypatch, rng):
    import json

    monkeypatch.chdir(tmp_path)
    _run_outputs(tmp_path, rng)
    registration_path = tmp_path / "data/register/registration.json"
    record = json.loads(registration_path.read_text())
    record["challenger"]["rescored"] = False  # scored by the evaluation: its psnr is metrics.json's 24.1234
    write_json(registration_path, record)
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 0 and "warning" not in result.output
    assert "Warning" not in (tmp_path / "report.html").read_text()
    record["challenger"]["psnr"] = 25.5  # a later register run, or an evaluate run without one
    write_json(registration_path, record)
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 0
    assert ("warning: data/register/registration.json is not of the evaluation in data/evaluate/metrics.json (it "
            "scores v2 at test PSNR 25.5000, the evaluation 24.1234); run dvc repro") in result.output
    page = (tmp_path / "report.html").read_text()
    assert "<b>Warning: this registration is not of the evaluation above</b> (it scores v2 at test PSNR" in page
    record["challenger"]["rescored"] = True  # the register stage scored it itself: nothing to compare
    write_json(registration_path, record)
    assert "warning" not in runner.invoke(app, ["report"]).output
    # real sets configured and scored since a registration decided on the test split
    metrics_path = tmp_path / "data/evaluate/metrics.json"
    write_json(metrics_path, {**json.loads(metrics_path.read_text()), "real_gate_set": "ab" * 32})
    assert ("(it was decided on the test split, and the evaluation scored real sets, on which the gate decides); "
            "run dvc repro") in runner.invoke(app, ["report"]).output


def test_the_report_shows_the_input_floor_and_the_challenger_against_the_untouched_input(tmp_path, monkeypatch, rng):
    import json

    monkeypatch.chdir(tmp_path)
    _run_outputs(tmp_path, rng)
    registration_path = tmp_path / "data/register/registration.json"
    record = json.loads(registration_path.read_text())
    untouched = {"version": "input", "rescored": False, "psnr": 22.0, "ssim": 0.8, "mse": 0.006,
                 "gate_set": "ab12" * 16}
    write_json(registration_path, record | {"over_input": True, "untouched": untouched})
    assert runner.invoke(app, ["report"]).exit_code == 0
    page = (tmp_path / "report.html").read_text()
    for text in ("<th>untouched input</th><th>challenger − untouched input</th>", "22.0000", "+2.1234",
                 "<td>input floor</td><td>on: the challenger must beat the untouched input on the gate set</td>",
                 "<th>champion v1 (re-scored)</th><th>challenger − champion v1</th>"):
        assert text in page, text
    del record["champion"]  # the first model: only the input to compare with
    write_json(registration_path, record | {"over_input": False, "untouched": untouched})
    assert runner.invoke(app, ["report"]).exit_code == 0
    page = (tmp_path / "report.html").read_text()
    assert "<th>challenger v2</th><th>untouched input</th>" in page and "<th>champion" not in page
    assert "<td>input floor</td><td>off (register.require_gain_over_input: false)</td>" in page
    write_json(registration_path, record | {"over_input": True, "untouched": None})  # on, but the input unknown
    assert runner.invoke(app, ["report"]).exit_code == 0
    assert ("<td>input floor</td><td>on, not applied: the untouched input&#x27;s scores on this gate set are not "
            "known</td>") in (tmp_path / "report.html").read_text()
    write_json(registration_path, record)  # decided before the floor existed: no row claims either way
    assert runner.invoke(app, ["report"]).exit_code == 0 and "input floor" not in (tmp_path / "report.html").read_text()


def test_inputs_of_the_wrong_kind_are_one_line_not_a_traceback(tmp_path, monkeypatch, rng):
    import json

    monkeypatch.chdir(tmp_path)
    _run_outputs(tmp_path, rng)
    (tmp_path / "folder").mkdir()
    for option in ("--metrics", "--grid"):
        result = runner.invoke(app, ["report", option, "folder"])
        assert result.exit_code == 2 and result.output.startswith("error: cannot read folder ("), result.output
    metrics_path = tmp_path / "data/evaluate/metrics.json"
    metrics = json.loads(metrics_path.read_text())
    real = {"count": 2, "psnr": 20.0, "identity_psnr": 19.0}
    for edited, shown in [
        ({"psnr": "21.2"}, "metrics.json lacks numbers under psnr:"),
        ({"count": True}, "metrics.json lacks numbers under count:"),
        ({"real": {"fh": {**real, "count": "two"}}, "real_mean": {"psnr": 1, "tone_psnr": 1, "ssim": 1},
          "real_gate_set": "ab" * 32}, "metrics.json lacks numbers under real.fh.count:"),
        ({"real": {"fh": real}, "real_mean": {"psnr": 1, "tone_psnr": 1, "ssim": 1}, "real_gate_set": 123},
         "metrics.json: real_gate_set is not the digest `dvc repro evaluate` writes; rerun it"),
    ]:
        write_json(metrics_path, metrics | edited)
        result = runner.invoke(app, ["report"])
        assert result.exit_code == 2 and shown in result.output and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "report.html").exists()
    # NaN was a report of "evaluation nan", Infinity of "inf dB"; an integer of 400 digits was an OverflowError
    for number in (float("nan"), float("inf"), 10**400):
        metrics_path.write_text(json.dumps(metrics | {"psnr": number}))
        result = runner.invoke(app, ["report"])
        assert result.exit_code == 2 and "metrics.json lacks numbers under psnr:" in result.output, result.output
    write_json(metrics_path, metrics)
    grid = tmp_path / "data/evaluate/grid.png"
    whole = grid.read_bytes()
    grid.write_bytes(whole[: len(whole) // 2])  # cut short: was embedded, broken
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 2 and f"{grid.relative_to(tmp_path)} is a damaged PNG (" in result.output, result.output
    assert not (tmp_path / "report.html").exists()
    grid.write_bytes(whole)
    registration_path = tmp_path / "data/register/registration.json"
    record = json.loads(registration_path.read_text())
    record["champion"]["psnr"] = "23"
    write_json(registration_path, record)
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 2 and "registration.json lacks numbers under champion.psnr:" in result.output
