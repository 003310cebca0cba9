"""Demoiré pipeline library: synthesis, data, models, training, evaluation, registry.

Nothing here imports Prefect or DVC; every function takes plain arguments.
"""

import os

# The same bytes on every x86-64 CPU with AVX2. Intel MKL (torch's BLAS on x86) otherwise picks its kernels
# by CPU: with AVX-512 a matrix product's float sums differ in the last bit, and the simulated JPEG's
# quantisation turns such bits into pixels (measured: 195 of the default set's 960 images differ between an
# AVX-512 and an AVX2 machine). Read by MKL at its first call, so set on import; a user's own value is kept.
os.environ.setdefault("MKL_CBWR", "AVX2")
