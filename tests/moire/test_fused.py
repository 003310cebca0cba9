"""Compiled where it pays, eager otherwise, the same numbers either way (pipeline.moire.fused; issue 14)."""

import logging

import pytest
import torch

from pipeline.errors import ParamsError
from pipeline.moire import fused as fused_module
from pipeline.moire.display import SUBPIXEL_LAYOUTS, subpixel_coverage
from pipeline.moire.fused import COMPILE_ENV, MIN_FRAME_PIXELS, compile_mode, fused, wants_compiled


def _traced(image: torch.Tensor) -> torch.Tensor:
    """1 where this ran inside torch.compile's trace, 0 where it ran eagerly."""
    return torch.full_like(image, float(torch.compiler.is_compiling()))


def test_auto_compiles_only_frames_larger_than_the_quickstarts(monkeypatch):
    monkeypatch.delenv(COMPILE_ENV, raising=False)
    assert compile_mode() == "auto"
    assert not wants_compiled(torch.zeros(1, 512, 512))  # the largest frame of a 128² quickstart pair
    assert not wants_compiled(torch.zeros(16, 512, 512))  # per frame, whatever the batch
    assert wants_compiled(torch.zeros(1, 514, 514))
    assert MIN_FRAME_PIXELS == 512 * 512
    monkeypatch.setenv(COMPILE_ENV, "0")
    assert not wants_compiled(torch.zeros(1, 2048, 2048))
    monkeypatch.setenv(COMPILE_ENV, "1")
    assert wants_compiled(torch.zeros(1, 4, 4))


def test_an_unknown_mode_names_the_variable_the_value_and_the_allowed_ones(monkeypatch):
    monkeypatch.setenv(COMPILE_ENV, "yes")
    with pytest.raises(ParamsError, match=r"DEMOIRE_COMPILE='yes': allowed values are auto, 0, 1"):
        fused(_traced)(torch.zeros(2))


def test_small_inputs_and_mode_0_run_eagerly(monkeypatch):
    monkeypatch.delenv(COMPILE_ENV, raising=False)
    assert float(fused(_traced)(torch.zeros(4, 4)).max()) == 0.0
    assert float(fused(_traced)(torch.zeros(5)).max()) == 0.0  # fewer than two sides: its length counts
    monkeypatch.setenv(COMPILE_ENV, "0")
    assert float(fused(_traced)(torch.zeros(1, 600, 600)).max()) == 0.0


def test_a_failed_compile_falls_back_to_eager_once_with_a_warning(monkeypatch, caplog):
    calls = []

    def broken_compile(function, **options):
        def compiled(*args, **kwargs):
            calls.append(options)
            raise RuntimeError("no C++ compiler")
        return compiled

    monkeypatch.setenv(COMPILE_ENV, "1")
    monkeypatch.setattr(fused_module.torch, "compile", broken_compile)
    run = fused(_traced)
    with caplog.at_level(logging.WARNING, logger="pipeline.moire.fused"):
        assert torch.equal(run(torch.ones(3)), torch.zeros(3))
        assert torch.equal(run(torch.ones(3)), torch.zeros(3))
    assert calls == [{"dynamic": True}]  # tried once, then eager for good
    assert "torch.compile of _traced failed (RuntimeError: no C++ compiler)" in caplog.text
    assert "DEMOIRE_COMPILE=0" in caplog.text


@pytest.mark.slow  # compiles three graphs and a probe: 5-20 s
def test_compiled_coverage_has_the_same_bits_as_eager(monkeypatch, caplog):
    monkeypatch.setenv(COMPILE_ENV, "1")
    assert float(fused(_traced)(torch.zeros(3)).min()) == 1.0  # mode 1 does run the compiled graph
    generator = torch.Generator().manual_seed(9)
    compiled = fused(subpixel_coverage)
    with caplog.at_level(logging.WARNING, logger="pipeline.moire.fused"):
        for layout in SUBPIXEL_LAYOUTS:
            for side in (48, 67):  # two sizes: one dynamic-shape graph serves both
                u = torch.rand(2, side, side, generator=generator) * 900
                v = torch.rand(2, side, side, generator=generator) * 900
                footprint, fill = torch.tensor([0.35, 1.7]), torch.tensor([0.55, 0.95])
                got = compiled(u, v, footprint, layout, fill)
                assert torch.equal(got, subpixel_coverage(u, v, footprint, layout, fill)), (layout, side)
    assert not [record for record in caplog.records if record.name == "pipeline.moire.fused"]  # no eager fallback
