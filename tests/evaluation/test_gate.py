"""The champion gate rule and the gate set hash."""

import pandas as pd
import pytest

from pipeline.errors import InputDataError
from pipeline.evaluation.gate import REAL, GateRule, GateScores, decide_promotion, gate_set_hash, load_gate_set
from pipeline.io import write_png

RULE = GateRule(margin_db=0.05, ssim_tolerance=0.005)


def _scores(version, psnr, ssim, gate="g"):
    return GateScores(version, psnr, ssim, 0.01, gate)


def test_no_champion_promotes():
    decision = decide_promotion(_scores("1", 20.0, 0.5), None, RULE)
    assert decision.promote and decision.reason == "no champion yet"
    assert decision.record()["champion_version"] is None


@pytest.mark.parametrize("champion", [None, _scores("1", 20.0, 0.5)])
def test_a_challenger_no_better_than_the_untouched_input_is_never_promoted(champion):
    untouched = _scores("input", 24.0, 0.6)
    worse = decide_promotion(_scores("2", 23.0, 0.7), champion, RULE, untouched)
    assert not worse.promote and worse.reason == ("not better than the untouched input: test PSNR 23.000 dB vs the "
                                                  "input's 24.000 dB (-1.000 dB)")
    assert not decide_promotion(_scores("2", 24.0, 0.7), champion, RULE, untouched).promote  # equal: not better
    assert decide_promotion(_scores("2", 24.1, 0.7), champion, RULE, untouched).promote
    no_floor = GateRule(0.05, 0.005, over_input=False)
    assert decide_promotion(_scores("2", 23.0, 0.7), champion, no_floor, untouched).promote


def test_on_real_sets_both_psnrs_must_beat_the_input():
    def real(version, psnr, tone):
        return GateScores(version, psnr, 0.8, 0.01, "r", kind=REAL.name, tone_psnr=tone)

    decision = decide_promotion(real("1", 22.5, 24.0), None, RULE, real("input", 22.0, 24.5))
    assert not decision.promote
    assert "real tone-aligned PSNR 24.000 dB vs the input's 24.500 dB (-0.500 dB)" in decision.reason
    assert decide_promotion(real("1", 22.5, 24.6), None, RULE, real("input", 22.0, 24.5)).promote


@pytest.mark.parametrize("psnr, promote", [(25.05, True), (25.1, True), (25.049, False), (25.0, False), (24.0, False)])
def test_psnr_must_beat_the_champion_by_the_margin(psnr, promote):
    decision = decide_promotion(_scores("2", psnr, 0.80), _scores("1", 25.0, 0.80), RULE)
    assert decision.promote is promote
    if not promote:
        assert "does not beat champion v1 by the margin" in decision.reason


def test_a_tie_never_promotes_even_with_zero_margin():
    rule = GateRule(0.0, 0.0)
    assert not decide_promotion(_scores("2", 25.0, 0.8), _scores("1", 25.0, 0.8), rule).promote
    assert decide_promotion(_scores("2", 25.001, 0.8), _scores("1", 25.0, 0.8), rule).promote


@pytest.mark.parametrize("ssim, promote", [(0.795, True), (0.7951, True), (0.7949, False), (0.70, False), (0.9, True)])
def test_ssim_may_drop_at_most_the_tolerance(ssim, promote):
    decision = decide_promotion(_scores("2", 26.0, ssim), _scores("1", 25.0, 0.80), RULE)
    assert decision.promote is promote
    if not promote:
        assert "SSIM regresses beyond the tolerance against champion v1" in decision.reason


def test_the_champion_itself_is_not_promoted_again():
    decision = decide_promotion(_scores("3", 25.0, 0.8), _scores("3", 25.0, 0.8), RULE)
    assert not decision.promote and decision.reason == "v3 is already champion"


def test_scores_on_different_gate_sets_are_not_compared():
    with pytest.raises(ValueError, match="different gate sets"):
        decide_promotion(_scores("2", 26.0, 0.8, "a"), _scores("1", 25.0, 0.8, "b"), RULE)


def _real(version, psnr, tone_psnr, ssim=0.8, gate="r"):
    return GateScores.from_means(version, {"psnr": psnr, "tone_psnr": tone_psnr, "ssim": ssim, "mse": 0.01}, gate, REAL)


@pytest.mark.parametrize("psnr, tone_psnr, promote", [
    (22.05, 25.05, True),    # both beat the champion by exactly the margin
    (22.50, 25.049, False),  # raw PSNR far better, tone-aligned PSNR short of the margin
    (22.049, 26.00, False),  # tone-aligned far better, raw PSNR short of the margin
    (22.00, 26.00, False),   # a raw tie
    (21.00, 24.00, False),
])
def test_on_real_sets_raw_and_tone_aligned_psnr_must_both_beat_the_margin(psnr, tone_psnr, promote):
    decision = decide_promotion(_real("2", psnr, tone_psnr), _real("1", 22.0, 25.0), RULE)
    assert decision.promote is promote
    both = (f"real PSNR {psnr:.3f} dB vs 22.000 dB ({psnr - 22:+.3f} dB, margin 0.05 dB), "
            f"real tone-aligned PSNR {tone_psnr:.3f} dB vs 25.000 dB ({tone_psnr - 25:+.3f} dB, margin 0.05 dB)")
    assert both in decision.reason
    assert decision.reason.startswith("beats champion v1: " if promote else "does not beat champion v1 by the margin: ")
    assert decision.record()["gate_kind"] == "real" and decision.record()["challenger"]["tone_psnr"] == tone_psnr


def test_on_real_sets_a_tie_never_wins_and_ssim_may_drop_at_most_the_tolerance():
    zero = GateRule(0.0, 0.0)
    assert not decide_promotion(_real("2", 22.0, 25.0), _real("1", 22.0, 25.0), zero).promote
    assert not decide_promotion(_real("2", 22.1, 25.0), _real("1", 22.0, 25.0), zero).promote  # tone-aligned tie
    assert decide_promotion(_real("2", 22.001, 25.001), _real("1", 22.0, 25.0), zero).promote
    assert decide_promotion(_real("2", 23.0, 26.0, ssim=0.795), _real("1", 22.0, 25.0), RULE).promote
    dropped = decide_promotion(_real("2", 23.0, 26.0, ssim=0.7949), _real("1", 22.0, 25.0), RULE)
    assert not dropped.promote
    assert dropped.reason == ("SSIM regresses beyond the tolerance against champion v1: "
                              "real SSIM 0.7949 vs 0.8000 (-0.0051, tolerance 0.005)")


def test_real_and_synthetic_scores_are_never_compared():
    with pytest.raises(ValueError, match="different gate sets"):
        decide_promotion(_real("2", 23.0, 26.0, gate="g"), _scores("1", 22.0, 0.8, "g"), RULE)


def _pairs(root, rng, names, split="test"):
    for name in names:
        write_png(root / "moire" / name, rng.integers(0, 256, (16, 16, 3), dtype="uint8"))
        write_png(root / "clean" / name, rng.integers(0, 256, (16, 16, 3), dtype="uint8"))
    return pd.DataFrame({"pair_id": range(len(names)), "split": split,
                         "moire_path": [f"moire/{n}" for n in names], "clean_path": [f"clean/{n}" for n in names]})


def test_gate_hash_follows_names_and_bytes_not_order_or_location(tmp_path, rng):
    frame = _pairs(tmp_path / "a", rng, ["x.png", "y.png"])
    digest = gate_set_hash(frame, tmp_path / "a")
    assert gate_set_hash(frame.iloc[::-1], tmp_path / "a") == digest
    (tmp_path / "a").rename(tmp_path / "b")
    assert gate_set_hash(frame, tmp_path / "b") == digest
    (tmp_path / "b" / "clean" / "y.png").write_bytes((tmp_path / "b" / "clean" / "x.png").read_bytes())
    assert gate_set_hash(frame, tmp_path / "b") != digest
    assert gate_set_hash(frame.iloc[:1], tmp_path / "b") != digest


def test_gate_set_is_the_test_split_and_missing_inputs_are_one_line(tmp_path, rng):
    frame = pd.concat([_pairs(tmp_path, rng, ["t.png"]), _pairs(tmp_path, rng, ["v.png"], "val")], ignore_index=True)
    frame["pair_id"] = range(len(frame))
    frame.to_parquet(tmp_path / "pairs.parquet")
    gate = load_gate_set(tmp_path / "pairs.parquet", tmp_path)
    assert list(gate.frame.moire_path) == ["moire/t.png"]
    assert gate.digest == gate_set_hash(frame[frame.split == "test"], tmp_path)
    with pytest.raises(InputDataError, match="pairs index not found: .*none.parquet \\(`dvc repro preprocess` writes it\\)"):
        load_gate_set(tmp_path / "none.parquet", tmp_path)
    (tmp_path / "moire" / "t.png").unlink()
    with pytest.raises(InputDataError, match="test image not readable: .*t.png"):
        load_gate_set(tmp_path / "pairs.parquet", tmp_path)
