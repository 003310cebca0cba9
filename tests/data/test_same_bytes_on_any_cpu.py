"""The same seed renders the same bytes whichever kernels the CPU's maths library picks.

Intel MKL, torch's BLAS and the vector maths behind its CPU exp, log and sqrt on x86, picks its kernels by CPU
vendor and instruction set, and their last bits with them; the renderer's roundings would turn those into whole
levels, so it computes what MKL would in float64 and rounds once (pipeline.moire.portable; tests/moire/
test_portable.py moves MKL's results by one ulp on any machine). Here, on one machine, `MKL_ENABLE_INSTRUCTIONS`
makes MKL take other kernels, as an older CPU's would, and every byte of a rendered set is compared; each test's
control shows MKL's results do differ here (where they do not, the test could not fail: skipped). `pipeline` also
pins MKL's portable branch (`MKL_CBWR=COMPATIBLE`) for what else calls it, and Intel IPP inside OpenCV to its AVX2
kernels (the last tests). The camera's JPEG runs through libjpeg in integers, which no CPU reorders.
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


# Intel IPP inside OpenCV picks its kernels by CPU as well (its bicubic resize, which brings a screen's content up to
# the display's resolution); `pipeline` holds it to its AVX2 ones. These three pairs of the default set are among the
# seven images its AVX-512 kernels rendered otherwise on an Ice Lake Xeon, when an AVX2-only AMD Zen 1 rendered the
# AVX2 bytes.
IPP_RENDER = """
import hashlib, sys
import pipeline
from pipeline.config import load_params
from pipeline.data.synthetic import ipp_kernels, render_pair, source_for_pair
from pipeline.sources import collect_sources
params = load_params("params.yaml")
cfg = params.synthesize
specs, _ = collect_sources(cfg.sources.bundled, cfg.sources.procedural, cfg.sources.folders, cfg.sources.screen_kinds)
digest = hashlib.sha256()
for index in (85, 88, 330):
    for image in render_pair(index, specs[source_for_pair(index, cfg.n_pairs, len(specs))], cfg, params.seed)[:2]:
        digest.update(image.tobytes())
print(ipp_kernels())
print(digest.hexdigest())
"""


def ipp_render(**env: str) -> tuple[str, str]:
    """(IPP's kernels, digest of the three pairs) rendered in a fresh process with `env` and no OPENCV_IPP of ours."""
    result = subprocess.run([sys.executable, "-c", IPP_RENDER], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**{k: v for k, v in os.environ.items() if k != "OPENCV_IPP"}, **env})
    assert result.returncode == 0, result.stderr
    kernels, digest = result.stdout.strip().splitlines()[-2:]
    return kernels, digest


def test_pipeline_holds_opencv_s_ipp_to_its_avx2_kernels_and_keeps_a_user_s_choice():
    show = [sys.executable, "-c", "import os, pipeline, cv2; print(os.environ['OPENCV_IPP'], cv2.ipp.getIppVersion())"]
    ours = {k: v for k, v in os.environ.items() if k != "OPENCV_IPP"}
    pinned, kept = (subprocess.run(show, cwd=ROOT, capture_output=True, text=True, timeout=60, env={**ours, **extra})
                    for extra in ({}, {"OPENCV_IPP": "sse42"}))
    assert pinned.returncode == kept.returncode == 0, pinned.stderr + kept.stderr
    assert pinned.stdout.startswith("avx2 ") and "AVX2 (l9)" in pinned.stdout  # every x86 CPU here has AVX2
    assert kept.stdout.startswith("sse42 ") and "(l9)" not in kept.stdout


def test_a_cpu_with_avx512_renders_the_bytes_of_ipp_s_avx2_kernels():
    pinned, avx2, avx512 = ipp_render(), ipp_render(OPENCV_IPP="avx2"), ipp_render(OPENCV_IPP="avx512")
    if "AVX-512" not in avx512[0]:
        pytest.skip(f"no AVX-512 kernels of IPP on this CPU ({avx512[0]}): nothing else to compare")
    if avx512[1] == avx2[1]:  # the control: IPP's AVX-512 kernels render these pairs otherwise (an Ice Lake's do)
        pytest.skip(f"IPP's AVX-512 and AVX2 kernels render these pairs alike on this CPU: the test could not fail")
    assert pinned == avx2
