"""The render does not depend on the last bits of what torch hands to Intel MKL, which differ between CPUs.

Another CPU's MKL kernels return other last bits for exp, log, sqrt, sin, cos and matrix products (an AMD Zen 1's
float32 square roots differed from the correctly rounded ones in 20 % of values); this machine's cannot be made to
compute like another's, so each test moves every such result by one ulp instead and compares every byte.
"""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.config import parse_params
from pipeline.data.synthetic import render_pair, source_for_pair
from pipeline.moire.portable import portable
from pipeline.sources import collect_sources

# aten ops whose CPU kernels are MKL's: its vector maths (torch's vml.h) and its BLAS and LAPACK
MKL_OPS = {
    "acos", "asin", "atan", "cos", "erf", "erfc", "erfinv", "exp", "log", "log10", "log2", "sin", "sqrt", "tan",
    "tanh", "mm", "bmm", "addmm", "baddbmm", "addmv", "mv", "dot", "linalg_inv_ex", "linalg_solve_ex",
}
PAIRS, SIZE = 6, 64
# the default, and the optional parts of the simulator switched on (drawn patterns, defocus across the frame,
# colour crosstalk, moiré-free pairs, the gradient demosaic)
CONFIGS = {
    "default": {},
    "optional parts": {"patterns": {"fraction": 0.5}, "moire_free_fraction": 0.25,
                       "optics": {"defocus_spread": [0.0, 2.0]}, "sensor": {"crosstalk": [0.1, 0.3]},
                       "isp": {"demosaic": ["bilinear", "gradient"]}},
}


class ShiftResults(TorchDispatchMode):
    """Moves every floating result of the named aten ops (and their in-place forms) up by one ulp."""

    def __init__(self, ops: set[str]):
        super().__init__()
        self.ops, self.shifted = ops, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__.rstrip("_") in self.ops:
            for tensor in result if isinstance(result, tuple) else (result,):
                if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.numel():
                    tensor.copy_(torch.nextafter(tensor, torch.full_like(tensor, float("inf"))))
                    self.shifted += 1
        return result


def render(config: dict, shift: ShiftResults | None = None) -> list[bytes]:
    """Every image of PAIRS pairs rendered in this process, under `shift` where given."""
    cfg = parse_params({"synthesize": {"size": SIZE, **config}}).synthesize
    specs, _ = collect_sources(cfg.sources.bundled, cfg.sources.procedural, [], cfg.sources.screen_kinds)
    images = []
    for index in range(PAIRS):
        spec = specs[source_for_pair(index, PAIRS, len(specs))]
        if shift is None:
            moire, clean, _ = render_pair(index, spec, cfg, 3)
        else:
            with shift:
                moire, clean, _ = render_pair(index, spec, cfg, 3)
        images += [moire.tobytes(), clean.tobytes()]
    return images


@pytest.mark.parametrize("name", CONFIGS)
def test_the_render_is_the_same_whatever_the_last_bits_of_mkl_s_results(name):
    plain = render(CONFIGS[name])
    shift = ShiftResults(MKL_OPS)
    shifted = render(CONFIGS[name], shift)
    assert shift.shifted >= PAIRS  # the render does call them (in float64)
    assert shifted == plain


def test_the_render_shows_a_last_bit_where_it_keeps_one():
    # the control: a product's last bit does reach the bytes, so the test above could fail
    assert render(CONFIGS["default"], ShiftResults({"mul"})) != render(CONFIGS["default"])


def test_portable_rounds_a_float64_result_once_and_keeps_other_devices_and_dtypes_as_they_are():
    values = torch.linspace(0.01, 4.0, 10_000)
    assert portable(torch.sqrt, values).dtype == torch.float32
    exact = np.sqrt(values.numpy())  # NumPy's float32 square root is IEEE's, correctly rounded
    assert np.array_equal(portable(torch.sqrt, values).numpy(), exact)
    doubles = values.double()
    assert torch.equal(portable(torch.exp, doubles), doubles.exp())
