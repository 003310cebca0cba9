"""Real paired sets: found relative to the project, hashed by content, scored as the served model restores."""

import shutil

import numpy as np
import pytest
import torch

from pipeline.config import InferParams, RealSet
from pipeline.data.dataset import to_tensor
from pipeline.errors import InputDataError
from pipeline.evaluation.gate import scored_as
from pipeline.evaluation.metrics import image_metrics
from pipeline.evaluation.real_sets import (evaluation_metrics, find_real_sets, real_gate_hash, real_means,
                                           real_sets_scorer, score_real_set, served_restorer)
from pipeline.inference import restore_image
from pipeline.io import read_rgb, write_png
from pipeline.models import ModelSpec, build_model, save_model

TILING = InferParams(tile_size=32, tile_overlap=8)
SUMMARY_KEYS = {"count", "skipped", "hash", "psnr", "identity_psnr", "psnr_gain_over_identity", "tone_psnr",
                "identity_tone_psnr", "tone_psnr_gain_over_identity", "ssim", "identity_ssim", "tone_ssim",
                "identity_tone_ssim", "mse", "identity_mse", "moire_removed_low", "moire_removed_mid",
                "moire_removed_high"}


def test_the_set_metrics_the_params_check_for_clashes_are_those_scored():
    from pipeline.config import REAL_SET_METRICS

    assert set(REAL_SET_METRICS) == SUMMARY_KEYS


def test_set_names_whose_mlflow_keys_would_clash_are_refused():
    from pipeline.config import parse_params
    from pipeline.errors import ParamsError

    def sets(*names):
        return {"evaluate": {"real_sets": [{"name": name, "path": "/photos"} for name in names]}}

    with pytest.raises(ParamsError) as info:
        parse_params(sets("x", "x_tone"), "params.yaml")
    assert str(info.value) == ("params.yaml: evaluate.real_sets[1].name = 'x_tone': set 'x' would write the same "
                               "MLflow key, real_x_tone_psnr; choose another name")
    with pytest.raises(ParamsError, match="set 'a_identity' would write the same MLflow key, real_a_identity_psnr"):
        parse_params(sets("a_identity", "a"), "params.yaml")
    # keys that only look alike: set x's real_x_psnr_gain_over_identity, and x_psnr has no `gain_over_identity`
    assert len(parse_params(sets("x", "x_psnr", "x_moire", "x_test", "x_identity2")).evaluate.real_sets) == 5


def real_looking_pairs(root, rng, names, size=(40, 56)):
    """Generic-layout pairs: a smooth clean image, and its photo darker with diagonal moiré stripes and noise."""
    ys, xs = np.meshgrid(np.arange(size[0]), np.arange(size[1]), indexing="ij")
    for name in names:
        base = rng.uniform(40, 200, 3)
        clean = np.clip(base + 0.8 * xs[..., None] - 0.5 * ys[..., None], 0, 255)
        stripes = 18 * np.cos(2 * np.pi * (xs + ys) / rng.uniform(6, 14))[..., None]
        moire = np.clip(0.8 * clean + stripes + rng.normal(0, 2, clean.shape), 0, 255)
        write_png(root / "clean" / name, clean.astype(np.uint8))
        write_png(root / "moire" / name, moire.astype(np.uint8))
    return root


@pytest.fixture
def project(tmp_path, rng):
    """A project folder and, beside it, one real folder holding two groups of pairs."""
    real_looking_pairs(tmp_path / "real", rng, ["fhdmi_1.png", "fhdmi_2.png", "tip_1.png"])
    (tmp_path / "project").mkdir()
    return tmp_path / "project"


SETS = [RealSet(name="fhdmi", path="../real", include="fhdmi_*"), RealSet(name="tip", path="../real", include="tip_*")]


def _model(path):
    spec = ModelSpec("unet", 8, 2)
    model = build_model(spec, seed=0)
    save_model(model, spec, path)
    return model.eval()


def test_sets_are_found_relative_to_the_project_and_a_bad_entry_is_named(project):
    fhdmi, tip = find_real_sets(SETS, project)
    assert [p.name for p in fhdmi.found.pairs] == ["fhdmi_1.png", "fhdmi_2.png"] and fhdmi.key == "evaluate.real_sets[0]"
    assert [p.name for p in tip.found.pairs] == ["tip_1.png"]
    with pytest.raises(InputDataError) as info:
        find_real_sets([*SETS, RealSet(name="uhdm", path="../real", include="uhdm_*")], project)
    assert str(info.value).startswith("evaluate.real_sets[2] (uhdm): no pair in ") and "matches include 'uhdm_*'" in str(info.value)
    with pytest.raises(InputDataError, match=r"^evaluate.real_sets\[0\] \(x\): dataset folder not found: .*nowhere$"):
        find_real_sets([RealSet(name="x", path="../nowhere")], project)


def test_gate_hash_follows_names_and_bytes_not_order_location_or_list_order(project, tmp_path):
    digest = real_gate_hash(find_real_sets(SETS, project))
    assert real_gate_hash(find_real_sets(SETS[::-1], project)) == digest
    shutil.copytree(tmp_path / "real", tmp_path / "moved")
    moved = [s.model_copy(update={"path": tmp_path / "moved"}) for s in SETS]  # absolute path, another folder
    assert real_gate_hash(find_real_sets(moved, project)) == digest
    renamed = [SETS[0].model_copy(update={"name": "fhdmi-test"}), SETS[1]]
    assert real_gate_hash(find_real_sets(renamed, project)) != digest
    assert real_gate_hash(find_real_sets([SETS[0].model_copy(update={"limit": 1}), SETS[1]], project)) != digest
    (tmp_path / "real" / "clean" / "tip_1.png").write_bytes((tmp_path / "real" / "clean" / "fhdmi_1.png").read_bytes())
    assert real_gate_hash(find_real_sets(SETS, project)) != digest


def test_a_set_is_scored_as_served_tiled_and_unreadable_pairs_are_skipped(project, tmp_path):
    model = _model(tmp_path / "model")
    (tmp_path / "real" / "moire" / "fhdmi_2.png").write_bytes(b"truncated")
    (tmp_path / "real" / "moire" / "fhdmi_3.png").symlink_to(tmp_path / "nowhere.png")  # a link to nothing
    shutil.copy(tmp_path / "real" / "clean" / "fhdmi_1.png", tmp_path / "real" / "clean" / "fhdmi_3.png")
    fhdmi = find_real_sets(SETS, project)[0]
    scores = score_real_set(served_restorer(model, torch.device("cpu"), TILING), fhdmi)
    assert set(scores.summary) == SUMMARY_KEYS
    assert (scores.summary["count"], scores.summary["skipped"], scores.summary["hash"]) == (1, 2, fhdmi.digest)
    assert [name for name, _ in scores.skipped] == ["fhdmi_2.png", "fhdmi_3.png"]
    assert "cannot read image" in scores.skipped[0][1] and "not found" in scores.skipped[1][1]
    moire, clean = read_rgb(tmp_path / "real/moire/fhdmi_1.png"), read_rgb(tmp_path / "real/clean/fhdmi_1.png")
    served = restore_image(model, moire, "cpu", tile_size=32, overlap=8, falloff=TILING.falloff)  # 40x56: really tiled
    assert scores.per_image.psnr[0] == pytest.approx(image_metrics(to_tensor(served), to_tensor(clean))["psnr"], abs=1e-9)
    (tmp_path / "real" / "moire" / "fhdmi_1.png").write_bytes(b"truncated")
    with pytest.raises(InputDataError, match=r"^evaluate.real_sets\[0\] \(fhdmi\): none of the 3 selected pairs in "
                                             r".* is readable \(generic layout, 3 skipped; the first, fhdmi_1.png: "
                                             r"cannot read image .*\)$"):
        score_real_set(served_restorer(model, torch.device("cpu"), TILING), fhdmi)


def test_the_gate_scores_are_means_over_sets_each_set_counting_once(project, tmp_path):
    model = _model(tmp_path / "model")
    sets = find_real_sets(SETS, project)
    restore = served_restorer(model, torch.device("cpu"), TILING)
    scores = {real.name: score_real_set(restore, real) for real in sets}
    summaries = {name: s.summary for name, s in scores.items()}
    means = real_means(summaries)
    assert set(means) == {"psnr", "tone_psnr", "ssim", "mse", "identity_psnr", "identity_tone_psnr", "identity_ssim",
                          "identity_mse"}  # the input's too: the gate's floor
    assert means["identity_psnr"] == pytest.approx(
        (summaries["fhdmi"]["identity_psnr"] + summaries["tip"]["identity_psnr"]) / 2)
    assert means["psnr"] == pytest.approx((summaries["fhdmi"]["psnr"] + summaries["tip"]["psnr"]) / 2)
    assert means["tone_psnr"] == pytest.approx((summaries["fhdmi"]["tone_psnr"] + summaries["tip"]["tone_psnr"]) / 2)
    assert real_sets_scorer(sets, torch.device("cpu"), TILING)(tmp_path / "model") == pytest.approx(means)

    metrics = evaluation_metrics({"count": 3, "psnr": 20.0}, scores, sets, TILING)
    assert metrics["count"] == 3 and metrics["real"]["tip"]["count"] == 1
    assert metrics["real_mean"] == means and metrics["real_gate_set"] == scored_as(real_gate_hash(sets), TILING)
    assert evaluation_metrics({"count": 3}, {}, [], TILING) == {"count": 3}
    # the same sets restored otherwise (here half the falloff undone) are another key: never compared as one
    other = TILING.model_copy(update={"falloff": 0.5 if TILING.falloff != 0.5 else 0.0})
    assert evaluation_metrics({"count": 3}, scores, sets, other)["real_gate_set"] != metrics["real_gate_set"]


def test_real_sets_never_scored_are_named_as_such_not_as_changed():
    from pipeline.evaluation.real_sets import check_unchanged_since_scored

    with pytest.raises(InputDataError, match=r"^the real sets of evaluate.real_sets \(fh, tip\) were not scored by "
                                             r"the evaluation this stage reads; run `dvc repro -f evaluate` to score "
                                             r"them$"):
        check_unchanged_since_scored({"psnr": 20.0}, "ab" * 32, {"tip": "1" * 64, "fh": "2" * 64})
    check_unchanged_since_scored({"real_gate_set": "ab" * 32}, "ab" * 32, {"fh": "2" * 64})  # as scored: silent
