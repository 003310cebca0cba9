"""Maths whose last bits do not depend on the CPU: what torch hands to Intel MKL, done in float64 and rounded once.

On x86, torch computes float32 exp, log, sqrt, sin and cos with MKL's vector maths (VML, 1-ulp accuracy, not
correctly rounded) and matrix products with MKL's BLAS, whose kernels, and their last bits, follow the CPU's
vendor and model: on an AMD EPYC Zen 1, 20 % of torch's float32 square roots and 1 % of its exponentials were not
the correctly rounded ones, whatever `MKL_CBWR` said (docs/benchmarks.md). The renderer's roundings to 8-bit
levels turn such bits into whole levels: shifting the results of exp and log by one float32 ulp changed 16 of
48 rendered images, of the matrix product 7. In float64 the same libraries are off by at most an ulp of
float64, which the one rounding to float32 removes unless a value lies within it of a float32 rounding point
(about one value in 2**29), so the render is the same on any x86 CPU without pinning the library's kernels.
Where plain arithmetic, which IEEE rounds alike on every CPU, does the job as fast, the renderer uses it
instead: a 3×3 colour matrix as multiplies and adds, a square root as 1 / (1 / √v).

Elsewhere than on the CPU, the op runs in the tensors' own dtype: a GPU's render is not bytes-compared with a
CPU's, and float64 costs GPUs far more.
"""

from __future__ import annotations

from typing import Callable

import torch


def portable(op: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
    """op(*tensors) computed in float64 on the CPU and rounded once to the first tensor's dtype."""
    first = tensors[0]
    if first.device.type != "cpu" or first.dtype == torch.float64:
        return op(*tensors)
    return op(*(t.double() for t in tensors)).to(first.dtype)
