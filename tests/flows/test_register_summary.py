"""What the register stage says of its decision (the register-summary artifact) and of a metrics file it cannot use."""

import pytest

from flows.register import read_evaluation, registration_markdown
from pipeline.errors import InputDataError

RECORD = {"model_name": "demoire", "version": "3", "promote": False, "gate_kind": "real", "over_input": True,
          "reason": "not better than the untouched input: real PSNR 20.100 dB vs the input's 20.500 dB (-0.400 dB)",
          "untouched": {"version": "input", "psnr": 20.5, "tone_psnr": 25.25, "ssim": 0.7, "mse": 0.01}}


def test_the_summary_names_the_decision_and_the_input_it_had_to_beat():
    assert registration_markdown(RECORD) == (
        "# Registration\n\n`demoire` v3 kept as `challenger` by the real gate: not better than the untouched input: "
        "real PSNR 20.100 dB vs the input's 20.500 dB (-0.400 dB).\n\nThe untouched input on the gate set, which it "
        "had to beat: real PSNR 20.5000, real tone-aligned PSNR 25.2500.\n")
    off = registration_markdown(RECORD | {"over_input": False, "promote": True, "reason": "no champion yet"})
    assert off.endswith("by the real gate: no champion yet.\n\nInput floor off "
                        "(`register.require_gain_over_input: false`).\n")


@pytest.mark.parametrize("content, shown", [
    (None, "not found; `dvc repro evaluate` writes it"),
    ("{not json", "is not the JSON object `dvc repro evaluate` writes; rerun it"),
    ("[1, 2]", "is not the JSON object `dvc repro evaluate` writes; rerun it"),
])
def test_a_metrics_file_it_cannot_use_is_one_line(tmp_path, content, shown):
    metrics = tmp_path / "metrics.json"
    if content is not None:
        metrics.write_text(content)
    with pytest.raises(InputDataError, match="metrics.json " + shown.replace("(", r"\(").replace(")", r"\)")):
        read_evaluation(metrics)
    with pytest.raises(InputDataError, match=r"cannot read .* \(Is a directory\)"):
        read_evaluation(tmp_path)
