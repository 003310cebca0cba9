"""The same seed renders the same bytes on any x86-64 CPU with AVX2, with or without AVX-512.

Intel MKL picks its kernels by CPU; `MKL_ENABLE_INSTRUCTIONS=AVX2` makes this machine's MKL behave as on a CPU
without AVX-512, so one machine can compare both. `pipeline` sets `MKL_CBWR=AVX2` on import, which is what
makes them agree; the control renders with `MKL_CBWR=AUTO` and shows that without it they do not (where this
CPU has AVX-512: elsewhere both renders take the same kernels anyway).
"""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="MKL: x86-64 only")


def rendered_bytes(out: Path, **env: str) -> dict[str, bytes]:
    """Every file of a `demoire synthesize` set of 24 pairs of 96² rendered in a fresh process with `env`."""
    command = [sys.executable, "-m", "pipeline.cli", "-q", "synthesize", "--out", str(out), "--n", "24",
               "--size", "96", "--seed", "3", "--workers", "1"]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def has_avx512() -> bool:
    """Whether this CPU has AVX-512 (Linux)."""
    try:
        return " avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def test_a_cpu_without_avx512_renders_the_same_bytes(tmp_path):
    here = rendered_bytes(tmp_path / "here")
    assert len(here) == 48
    assert rendered_bytes(tmp_path / "avx2", MKL_ENABLE_INSTRUCTIONS="AVX2") == here
    if has_avx512():  # the control: MKL's own choice of kernels gives other bytes
        assert rendered_bytes(tmp_path / "auto-avx2", MKL_CBWR="AUTO", MKL_ENABLE_INSTRUCTIONS="AVX2") != \
            rendered_bytes(tmp_path / "auto", MKL_CBWR="AUTO")
