"""The same seed renders the same bytes whichever kernels the CPU's maths library picks.

Intel MKL, torch's BLAS and the vector maths behind its CPU exp, log and sqrt on x86, picks its kernels by CPU
vendor and instruction set, and their last bits with them; the renderer's roundings would turn those into whole
levels, so it computes what MKL would in float64 and rounds once (pipeline.moire.portable; tests/moire/
test_portable.py moves MKL's results by one ulp on any machine). Here, on one machine, `MKL_ENABLE_INSTRUCTIONS`
makes MKL take other kernels, as an older CPU's would, and every byte of a rendered set is compared; each test's
control shows MKL's results do differ here (where they do not, the test could not fail: skipped). `pipeline` also
pins MKL's portable branch (`MKL_CBWR=COMPATIBLE`) for what else calls it. The camera's JPEG runs through libjpeg
in integers, which no CPU reorders.
"""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


pytestmark = [
    pytest.mark.slow,  # several synthesize processes
    pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not torch.backends.mkl.is_available(),
                       reason="needs torch with MKL on an x86 CPU"),
]

MKL_RESULTS = """
import hashlib, sys, torch
x = torch.rand(2, 512, 512, generator=torch.Generator().manual_seed(0)) * 4 + 0.01
digest = hashlib.sha256()
for result in (x.exp(), x.log(), x.sqrt(), x @ x):
    digest.update(result.numpy().tobytes())
sys.stdout.write(digest.hexdigest())
"""


def with_mkl(**env: str) -> dict[str, str]:
    """This process's environment without its MKL settings, and `env`'s."""
    return {**{k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")}, **env}


def mkl_results(**env: str) -> str:
    """Digest of float32 exp, log, sqrt and a matrix product by MKL in a fresh process with `env` (no pipeline)."""
    result = subprocess.run([sys.executable, "-c", MKL_RESULTS], cwd=ROOT, env=with_mkl(**env), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered_bytes(out: Path, **env: str) -> dict[str, bytes]:
    """Every image of a `demoire synthesize` set of 24 pairs of 96² rendered in a fresh process with `env` (and
    no MKL setting of the caller's)."""
    command = [sys.executable, "-m", "pipeline.cli", "-q", "synthesize", "--out", str(out), "--n", "24",
               "--size", "96", "--seed", "3", "--workers", "2"]
    result = subprocess.run(command, cwd=ROOT, env=with_mkl(**env), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def test_pipeline_pins_mkl_s_portable_branch_and_keeps_a_user_s():
    show = [sys.executable, "-c", "import os, pipeline; print(os.environ['MKL_CBWR'])"]
    pinned, kept = (subprocess.run(show, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
                    for env in (with_mkl(), with_mkl(MKL_CBWR="AVX2")))
    assert pinned.returncode == kept.returncode == 0, pinned.stderr + kept.stderr
    assert (pinned.stdout.strip(), kept.stdout.strip()) == ("COMPATIBLE", "AVX2")


@pytest.fixture(scope="module")
def rendered_here(tmp_path_factory) -> dict[str, bytes]:
    """The set as this CPU renders it with MKL left to `pipeline`'s setting."""
    return rendered_bytes(tmp_path_factory.mktemp("here") / "set")


@pytest.mark.parametrize("instructions", ["AVX2", "SSE4_2"])
def test_a_cpu_with_fewer_instruction_sets_renders_the_same_bytes(tmp_path, rendered_here, instructions):
    # the control: left to itself, MKL computes otherwise when held to fewer instruction sets
    if mkl_results(MKL_CBWR="AUTO") == mkl_results(MKL_CBWR="AUTO", MKL_ENABLE_INSTRUCTIONS=instructions):
        pytest.skip(f"MKL computes the same here with and without {instructions}: the test could not fail")
    assert len(rendered_here) == 48
    assert rendered_bytes(tmp_path / "fewer", MKL_ENABLE_INSTRUCTIONS=instructions) == rendered_here
