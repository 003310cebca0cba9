"""Demoiré pipeline library: synthesis, data, models, training, evaluation, registry.

Nothing here imports Prefect or DVC; every function takes plain arguments.
"""

import os

# The same rendered bytes on Intel CPUs with AVX2, with or without AVX-512 (what MKL's conditional numerical
# reproducibility promises; other vendors' CPUs may still differ). Intel MKL (torch's BLAS on x86) otherwise
# picks its kernels by CPU, and with AVX-512 a matrix product's float sums differ in the last bit, which the
# simulated JPEG's quantisation turns into whole levels (195 of the default set's 960 images differed when
# MKL was capped at AVX2 on an AVX-512 machine). MKL reads it at its first call, so it is set on import: a
# process that multiplied matrices before importing pipeline keeps MKL's own choice. A user's value is kept.
os.environ.setdefault("MKL_CBWR", "AVX2")
