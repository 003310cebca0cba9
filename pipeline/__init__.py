"""Demoiré pipeline library: synthesis, data, models, training, evaluation, registry.

Nothing here imports Prefect or DVC; every function takes plain arguments.
"""

import os

# The same rendered bytes on Intel and AMD x86 CPUs with AVX2, with or without AVX-512: MKL's portable branch of
# its conditional numerical reproducibility, the one it documents for the same results across vendors. Intel
# MKL (torch's BLAS, and its vector maths behind exp, log and sqrt on the CPU) otherwise picks its kernels by
# CPU, and their last bits, through the renderer's roundings, become whole levels: an Intel Xeon and an AMD
# Zen 4 rendered different default sets under `MKL_CBWR=AVX2`, which MKL honours on Intel CPUs only (AMD's
# take its own choice). The portable branch costs nothing measurable here (docs/benchmarks.md). MKL reads it
# at its first call, so it is set on import: a process that used MKL before importing pipeline keeps MKL's
# own choice. A user's value is kept.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
