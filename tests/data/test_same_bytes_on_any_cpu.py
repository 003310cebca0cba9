"""The same seed renders the same bytes on an Intel CPU with AVX2 whether or not it has AVX-512.

Intel MKL picks its kernels by CPU; `MKL_ENABLE_INSTRUCTIONS=AVX2` makes this machine's MKL behave as on a CPU
without AVX-512, so one AVX-512 machine can compare both (elsewhere both renders may take the same kernels
and the test could not fail: skipped). `pipeline` sets `MKL_CBWR=AVX2` on import, which is what makes them agree; the
control renders with `MKL_CBWR=AUTO` and shows that without it they do not.
"""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def intel_with_avx512() -> bool:
    """Whether this is an Intel CPU with AVX-512 (Linux), where MKL takes its AVX-512 kernels."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "GenuineIntel" in cpuinfo and " avx512f" in cpuinfo


pytestmark = [
    pytest.mark.slow,  # four synthesize processes
    pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not torch.backends.mkl.is_available()
                       or not intel_with_avx512(), reason="needs torch with MKL on an Intel CPU with AVX-512"),
]


def rendered_bytes(out: Path, **env: str) -> dict[str, bytes]:
    """Every image of a `demoire synthesize` set of 24 pairs of 96² rendered in a fresh process with `env` (and
    no MKL setting of the caller's)."""
    command = [sys.executable, "-m", "pipeline.cli", "-q", "synthesize", "--out", str(out), "--n", "24",
               "--size", "96", "--seed", "3", "--workers", "1"]
    base = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")}
    result = subprocess.run(command, cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def test_a_cpu_without_avx512_renders_the_same_bytes(tmp_path):
    here = rendered_bytes(tmp_path / "here")
    assert len(here) == 48
    assert rendered_bytes(tmp_path / "avx2", MKL_ENABLE_INSTRUCTIONS="AVX2") == here
    # the control: MKL's own choice of kernels gives other bytes
    assert rendered_bytes(tmp_path / "auto-avx2", MKL_CBWR="AUTO", MKL_ENABLE_INSTRUCTIONS="AVX2") != \
        rendered_bytes(tmp_path / "auto", MKL_CBWR="AUTO")
