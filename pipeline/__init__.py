"""Demoiré pipeline library: synthesis, data, models, training, evaluation, registry.

Nothing here imports Prefect or DVC; every function takes plain arguments.
"""

import os

# One branch of Intel MKL's conditional numerical reproducibility, its portable one (documented for the same
# results across x86 vendors): MKL, torch's BLAS and the vector maths behind its CPU exp, log and sqrt on x86,
# otherwise picks its kernels, and their last bits, by CPU. The renderer does not depend on it (it computes what
# MKL would in float64 and rounds once: pipeline.moire.portable); evaluation and training still call MKL, and
# resumed work is fingerprinted with the branch. AMD CPUs take MKL's own choice whatever it says
# (docs/benchmarks.md). MKL reads it at its first call, so it is set on import; a user's value is kept.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

# Intel IPP inside OpenCV (its bicubic resize, which brings a screen's content up to the display's resolution) picks
# its kernels by CPU too, and its AVX-512 ones round otherwise than its AVX2 ones: an Ice Lake Xeon rendered 7 of the
# default set's 960 images otherwise than an AVX2-only AMD Zen 1 until IPP was held to AVX2 here (docs/benchmarks.md).
# So every x86 CPU with AVX2 takes the same path. OpenCV reads it when it is first imported: before any module here
# imports it.
os.environ.setdefault("OPENCV_IPP", "avx2")

# MLflow retries a request to a tracking server that stopped answering 7 times, over about 4 minutes; 2 retries of
# at most 60 s each make it seconds, and the callers say so in one line (a training goes on without the server).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
