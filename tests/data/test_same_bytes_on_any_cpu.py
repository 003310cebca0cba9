"""The same seed renders the same bytes whichever kernels the CPU's BLAS picks.

Intel MKL (torch's BLAS on x86) picks its kernels by CPU, and a float32 matrix product's last bit with them.
Two ways to make one machine take other kernels: `MKL_CBWR=COMPATIBLE` (MKL's portable path, the one it
documents for the same results on any x86 vendor) on any x86 CPU, and `MKL_ENABLE_INSTRUCTIONS=AVX2` on an
Intel CPU with AVX-512. The camera's JPEG, which rounds every coefficient and level, runs through libjpeg in
integers so that its roundings do not see those last bits; each test's control shows the kernels do differ
here in float32 (where they do not, it could not fail: skipped).
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
    pytest.mark.slow,  # several synthesize processes
    pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not torch.backends.mkl.is_available(),
                       reason="needs torch with MKL on an x86 CPU"),
]

PRODUCT = """
import hashlib, sys, torch
from pipeline.moire.jpeg import dct_matrix
blocks = torch.rand(2, 4096, 64, generator=torch.Generator().manual_seed(0)) * 255 - 128
basis = torch.kron(dct_matrix(torch.device("cpu")), dct_matrix(torch.device("cpu")))
sys.stdout.write(hashlib.sha256((blocks @ basis.T).numpy().tobytes()).hexdigest())
"""


def with_mkl(**env: str) -> dict[str, str]:
    """This process's environment without its MKL settings, and `env`'s."""
    return {**{k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")}, **env}


def float32_product(**env: str) -> str:
    """Digest of a float32 matrix product the size of a 512² plane's DCT, computed in a fresh process with `env`."""
    result = subprocess.run([sys.executable, "-c", PRODUCT], cwd=ROOT, env=with_mkl(**env), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered_bytes(out: Path, **env: str) -> dict[str, bytes]:
    """Every image of a `demoire synthesize` set of 24 pairs of 96² rendered in a fresh process with `env` (and
    no MKL setting of the caller's)."""
    command = [sys.executable, "-m", "pipeline.cli", "-q", "synthesize", "--out", str(out), "--n", "24",
               "--size", "96", "--seed", "3", "--workers", "1"]
    result = subprocess.run(command, cwd=ROOT, env=with_mkl(**env), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def test_mkl_s_portable_path_renders_the_same_bytes(tmp_path):
    if float32_product() == float32_product(MKL_CBWR="COMPATIBLE"):
        pytest.skip("MKL's portable path multiplies as its default does on this CPU: the test could not fail")
    here = rendered_bytes(tmp_path / "here")
    assert len(here) == 48
    assert rendered_bytes(tmp_path / "compatible", MKL_CBWR="COMPATIBLE") == here


@pytest.mark.skipif(not intel_with_avx512(), reason="needs an Intel CPU with AVX-512")
def test_a_cpu_without_avx512_renders_the_same_bytes(tmp_path):
    # the control: MKL's own choice of kernels multiplies otherwise without AVX-512
    assert float32_product(MKL_CBWR="AUTO", MKL_ENABLE_INSTRUCTIONS="AVX2") != float32_product(MKL_CBWR="AUTO")
    here = rendered_bytes(tmp_path / "here")  # `pipeline`'s MKL_CBWR=AVX2 as well as libjpeg's integer JPEG
    assert len(here) == 48
    assert rendered_bytes(tmp_path / "avx2", MKL_ENABLE_INSTRUCTIONS="AVX2") == here
