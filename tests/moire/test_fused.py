"""Compiled in long runs of large frames, eager otherwise, the same numbers either way (pipeline.moire.fused; issue 14)."""

import logging

import pytest
import torch

from pipeline.errors import ParamsError
from pipeline.moire import fused as fused_module
from pipeline.moire.display import SUBPIXEL_LAYOUTS, subpixel_coverage
from pipeline.moire.fused import COMPILE_ENV, MIN_FRAME_PIXELS, Fused, compile_mode

LARGE = (1, 513, 513)  # one frame above MIN_FRAME_PIXELS
SMALL = (16, 512, 512)  # a batch of frames as large as the quickstart's largest


def _traced(image: torch.Tensor) -> torch.Tensor:
    """1 where this ran inside torch.compile's trace, 0 where it ran eagerly."""
    return torch.full_like(image, float(torch.compiler.is_compiling()))


@pytest.fixture
def fake_compile(monkeypatch):
    """torch.compile replaced by a marker: a 'compiled' function returns its eager result + 1; records each compile."""
    compiles = []

    def compile_(function, **options):
        compiles.append(options)
        return lambda *args, **kwargs: function(*args, **kwargs) + 1

    monkeypatch.setattr(fused_module.torch, "compile", compile_)
    return compiles


def test_auto_compiles_after_enough_large_frames_and_never_for_small_ones(monkeypatch, fake_compile):
    monkeypatch.delenv(COMPILE_ENV, raising=False)
    monkeypatch.setattr(fused_module, "COMPILE_AFTER_CALLS", 3)
    assert compile_mode() == "auto" and MIN_FRAME_PIXELS == 512 * 512
    run = Fused(_traced)
    assert all(float(run(torch.zeros(SMALL)).max()) == 0 for _ in range(10))  # small frames never count
    assert [float(run(torch.zeros(LARGE)).max()) for _ in range(5)] == [0, 0, 0, 1, 1]  # compiled after 3
    assert float(run(torch.zeros(SMALL)).max()) == 0  # a small frame stays eager in a compiled process
    assert float(run(torch.zeros(5)).max()) == 0  # fewer than two sides: its length counts
    assert fake_compile == [{"dynamic": True}]


def test_mode_1_compiles_from_the_first_call_and_mode_0_never(monkeypatch, fake_compile):
    monkeypatch.setenv(COMPILE_ENV, "1")
    assert float(Fused(_traced)(torch.zeros(2, 2)).max()) == 1
    monkeypatch.setenv(COMPILE_ENV, "0")
    run = Fused(_traced)
    assert all(float(run(torch.zeros(LARGE)).max()) == 0 for _ in range(70))
    assert float(run.run_compiled(torch.zeros(2)).max()) == 1  # asked for explicitly (the bench's warm-up)


def test_an_unknown_mode_names_the_variable_the_value_and_the_allowed_ones(monkeypatch):
    monkeypatch.setenv(COMPILE_ENV, "yes")
    with pytest.raises(ParamsError, match=r"DEMOIRE_COMPILE='yes': allowed values are auto, 0, 1"):
        Fused(_traced)(torch.zeros(2))


def test_a_failed_compile_falls_back_to_eager_once_with_a_warning(monkeypatch, caplog):
    calls = []

    def broken_compile(function, **options):
        def compiled(*args, **kwargs):
            calls.append(options)
            raise RuntimeError("no C++ compiler")
        return compiled

    monkeypatch.setenv(COMPILE_ENV, "1")
    monkeypatch.setattr(fused_module.torch, "compile", broken_compile)
    run = Fused(_traced)
    with caplog.at_level(logging.WARNING, logger="pipeline.moire.fused"):
        assert torch.equal(run(torch.ones(3)), torch.zeros(3))
        assert torch.equal(run(torch.ones(3)), torch.zeros(3))
    assert calls == [{"dynamic": True}]  # tried once, then eager for good
    assert "torch.compile of _traced failed (RuntimeError: no C++ compiler)" in caplog.text
    assert "DEMOIRE_COMPILE=0" in caplog.text


@pytest.mark.slow  # compiles three graphs and a probe: 5-20 s
def test_compiled_coverage_has_the_same_bits_as_eager(monkeypatch, caplog):
    monkeypatch.setenv(COMPILE_ENV, "1")
    assert float(Fused(_traced)(torch.zeros(3)).min()) == 1.0  # mode 1 does run the compiled graph
    generator = torch.Generator().manual_seed(9)
    compiled = Fused(subpixel_coverage)
    with caplog.at_level(logging.WARNING, logger="pipeline.moire.fused"):
        for layout in SUBPIXEL_LAYOUTS:
            for side in (48, 67):  # two sizes: one dynamic-shape graph serves both
                u = torch.rand(2, side, side, generator=generator) * 900
                v = torch.rand(2, side, side, generator=generator) * 900
                footprint, fill = torch.tensor([0.35, 1.7]), torch.tensor([0.55, 0.95])
                got = compiled(u, v, footprint, layout, fill)
                assert torch.equal(got, subpixel_coverage(u, v, footprint, layout, fill)), (layout, side)
    assert not [record for record in caplog.records if record.name == "pipeline.moire.fused"]  # no eager fallback
