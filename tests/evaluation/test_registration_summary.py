"""What the register stage says of its decision (the register-summary artifact)."""

from pipeline.evaluation.run_report import registration_markdown

RECORD = {"model_name": "demoire", "version": "3", "promote": False, "gate_kind": "real", "over_input": True,
          "reason": "not better than the untouched input: real PSNR 20.100 dB vs the input's 20.500 dB (-0.400 dB)",
          "untouched": {"version": "input", "psnr": 20.5, "tone_psnr": 25.25, "ssim": 0.7, "mse": 0.01}}


def test_the_summary_names_the_decision_and_the_input_it_had_to_beat():
    assert registration_markdown(RECORD) == (
        "# Registration\n\n`demoire` v3 kept as `challenger` by the real gate: not better than the untouched input: "
        "real PSNR 20.100 dB vs the input's 20.500 dB (-0.400 dB).\n\nInput floor on: the challenger must beat the "
        "untouched input on the gate set (the input: real PSNR 20.5000, real tone-aligned PSNR 25.2500).\n")
    off = registration_markdown(RECORD | {"over_input": False, "promote": True, "reason": "no champion yet"})
    assert off.endswith("by the real gate: no champion yet.\n\nInput floor off "
                        "(register.require_gain_over_input: false).\n")
    unknown = registration_markdown(RECORD | {"untouched": None})  # on, but nothing known to compare with
    assert unknown.endswith("\n\nInput floor on, not applied: the untouched input's scores on this gate set are "
                            "not known.\n")
    assert "Input floor" not in registration_markdown({k: v for k, v in RECORD.items() if k != "over_input"})


def test_a_registration_that_found_its_model_registered_says_it_moved_nothing():
    reused = RECORD | {"promote": True, "reason": "no champion yet",
                       "registered_earlier": {"run_id": "95e96dcb", "dvc_experiment": "tidal-rump"}}
    text = registration_markdown(reused)
    assert text.startswith("# Registration\n\n`demoire` v3 was registered earlier (experiment tidal-rump, run "
                           "95e96dcb) for the same model and scores: nothing was registered or moved now; then it "
                           "was promoted to `champion` by the real gate: no champion yet.\n\n")
    assert "v3 promoted to" not in text
