"""torch.compile where it measurably pays in the simulator, with the eager function as fallback and reference.

Inductor fuses a chain of elementwise passes into one loop over the pixels. The subpixel coverage at
camera resolution is such a chain (a dozen passes over up to 2048² × 3 floats, each bound by memory
on CPU): compiled, it ran 5–7× faster on the project's 2-core machine and gave the same bits as eager
(inductor keeps floating-point contraction off; `tests/moire/test_fused.py` checks the bits). The
blurs, the demosaic and the chroma smoothing measured slower compiled, so they stay eager.

Compiling the three layouts costs a process 4–5 s once inductor's on-disk cache holds them (18 s the
first time on a machine), what 250–1000 pairs of 512² save. So `auto` compiles only in a process
that has already run the function on COMPILE_AFTER_CALLS frames larger than the quickstart's: a short
run (the quickstart, the tests, a few hundred pairs) never pays for it, a long one pays it once its
first pairs are done. `DEMOIRE_COMPILE` overrides: `0` never compiles (a machine without a
C++ compiler), `1` compiles from the first call whatever the size; where compiling fails the eager
function runs instead, with a warning: the same numbers, only slower.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from typing import Any, Callable

import torch

from pipeline.errors import ParamsError

COMPILE_ENV = "DEMOIRE_COMPILE"
COMPILE_MODES = ("auto", "0", "1")
# Pixels per frame (the first argument's last two sides) above which a call counts as large: more than any
# frame of the quickstart's 128² pairs (up to 512² camera pixels at max_downscale 4).
MIN_FRAME_PIXELS = 512 * 512
# Large calls a process runs eagerly before `auto` compiles: about as many as would repay a warm compile
# (4.5 s / 17 ms a 512² pair). Renting until the rent has cost what buying does keeps any run within twice
# the time of the better choice made in hindsight, whatever its length.
COMPILE_AFTER_CALLS = 256

log = logging.getLogger(__name__)


def compile_mode() -> str:
    """`DEMOIRE_COMPILE` as one of COMPILE_MODES (unset: `auto`); anything else is an error naming it."""
    mode = os.environ.get(COMPILE_ENV, "auto").strip().lower() or "auto"
    if mode not in COMPILE_MODES:
        raise ParamsError(f"{COMPILE_ENV}={mode!r}: allowed values are {', '.join(COMPILE_MODES)}")
    return mode


class Fused:
    """`function` run eagerly or compiled (torch.compile, dynamic shapes), per `compile_mode`: the same numbers."""

    def __init__(self, function: Callable[..., torch.Tensor]) -> None:
        self.function = function
        self.compiled: Callable[..., torch.Tensor] | None = None
        self.failed = False
        self.large_calls = 0  # calls on frames above MIN_FRAME_PIXELS in this process
        functools.update_wrapper(self, function)

    def __call__(self, first: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        mode = compile_mode()
        if mode == "0" or first.device.type != "cpu":  # CUDA is unmeasured here (issue 14's GPU check)
            return self.function(first, *args, **kwargs)
        large = math.prod(first.shape[-2:]) > MIN_FRAME_PIXELS
        self.large_calls += large
        if mode == "1" or (large and (self.compiled is not None or self.large_calls > COMPILE_AFTER_CALLS)):
            return self.run_compiled(first, *args, **kwargs)
        return self.function(first, *args, **kwargs)

    def run_compiled(self, first: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """This call compiled, compiling first where this process has not (eager where compiling failed)."""
        if self.failed:
            return self.function(first, *args, **kwargs)
        if self.compiled is None:
            self.compiled = torch.compile(self.function, dynamic=True)
        try:
            return self.compiled(first, *args, **kwargs)
        except Exception as error:  # no C++ compiler, an unsupported platform: eager gives the same numbers
            self.failed = True
            log.warning("torch.compile of %s failed (%s: %s); running it eagerly from now on (same numbers, slower). "
                        "%s=0 skips compiling.", self.function.__qualname__, type(error).__name__, error, COMPILE_ENV)
            return self.function(first, *args, **kwargs)
