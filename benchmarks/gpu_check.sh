#!/usr/bin/env bash
# GPU check (issue 14): on a CUDA machine, in one go and within 8 minutes (--budget), prepare an
# interpreter, then run the GPU-marked tests, `demoire bench synth/train/infer --device cuda`, a DDP
# step (NCCL), 2 minutes of on-the-fly training with the `gpu` profile (mscale, bf16, torch.compile)
# and a tiled `demoire predict` of a 3840x2160 frame with the model it trained, then
# `bench train --compile`. Writes ONE JSON file: the device and versions, every step's figures,
# passed/failed/timeout/skipped with the error's last lines, the issue's goals met or not, the total
# time. A failed step is recorded and the next one runs; the file is rewritten after every step.
# Runs from a copy of the working tree without data/ or .venv (nothing is installed in the tree).
#
#   benchmarks/gpu_check.sh [--out FILE] [--budget 480] [--train-seconds 120] [--work DIR]
#   make gpu-check GPU_CHECK_ARGS='--out $OUT/gpu_check.json'
#
# Default output: reports/gpu_check.json. How it gets an interpreter (the first that applies):
#   --python PY   use PY as it is (it must import torch and the project's dependencies).
#   reuse         the interpreter running this script ($PYTHON, else the first of python3,
#                 python3.11, python3.12 that is 3.11 or later) already
#                 has a torch that sees CUDA: only the missing packages are installed, without their
#                 dependencies, into WORK/site (on PYTHONPATH); the machine's torch, numpy etc. stay.
#                 Offline: WHEELHOUSE=DIR (or --wheelhouse DIR) installs from those wheels alone.
#   install       otherwise: a venv in WORK/venv, torch==<constraints.txt's pin> from TORCH_INDEX
#                 (default https://download.pytorch.org/whl/cu128; or from WHEELHOUSE), then the
#                 project's dependencies (with constraints.txt on Python 3.11).
# The project itself is not installed: the steps import it from this tree (PYTHONPATH), so it also
# runs under a Python the project does not declare (e.g. 3.12 with a preinstalled CUDA torch).
# A wheelhouse for an offline Python 3.12 machine (see README.md, "GPU check"):
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --no-deps -d .whl PACKAGE==VERSION ...
#
# CPU rehearsal (every step at tiny sizes, against the current venv; tests/test_gpu_check.py runs it):
#   benchmarks/gpu_check.sh --device cpu --tiny --python .venv/bin/python --out /tmp/gpu_check.json
# Exit status: 0 when every step passed or was skipped, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
# The first Python >= 3.11 (the helper reads pyproject.toml with tomllib); `python3` first, since on a
# prepared GPU machine that is the one holding the CUDA torch.
if [ -z "${PYTHON:-}" ]; then
    for candidate in python3 python3.11 python3.12 python3.13; do
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            PYTHON=$candidate
            break
        fi
    done
fi
exec "${PYTHON:?no Python 3.11 or later found; set PYTHON}" benchmarks/gpu_check.py "$@"
