"""torch.compile where it measurably pays in the simulator, with the eager function as fallback and reference.

Inductor fuses a chain of elementwise passes into one loop over the pixels. The subpixel coverage at
camera resolution is such a chain (a dozen passes over up to 2048² × 3 floats, each bound by memory
on CPU): compiled, it ran 5–7× faster on the project's 2-core machine and gave the same bits as eager
(inductor keeps floating-point contraction off; `tests/moire/test_fused.py` checks the bits). The
blurs, the demosaic and the chroma smoothing measured slower compiled, so they stay eager.

Compiling the three layouts costs a process 4–5 s once inductor's on-disk cache holds them (18 s the
first time on a machine), about what 250–1000 pairs of 512² save; so only frames larger than the
quickstart's take it, and the tests' stay eager. `DEMOIRE_COMPILE` overrides: `0` never compiles (a
short run, or a machine without a C++ compiler), `1` compiles whatever the size; where compiling fails
the eager function runs instead, with a warning: the same numbers, only slower.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from typing import Any, Callable, TypeVar

import torch

from pipeline.errors import ParamsError

COMPILE_ENV = "DEMOIRE_COMPILE"
COMPILE_MODES = ("auto", "0", "1")
# Pixels per frame (the first argument's last two sides) above which `auto` compiles: more than any frame
# of the quickstart's 128² pairs (up to 512² camera pixels at max_downscale 4), a run too short to repay it.
MIN_FRAME_PIXELS = 512 * 512

log = logging.getLogger(__name__)
Function = TypeVar("Function", bound=Callable[..., torch.Tensor])


def compile_mode() -> str:
    """`DEMOIRE_COMPILE` as one of COMPILE_MODES (unset: `auto`); anything else is an error naming it."""
    mode = os.environ.get(COMPILE_ENV, "auto").strip().lower() or "auto"
    if mode not in COMPILE_MODES:
        raise ParamsError(f"{COMPILE_ENV}={mode!r}: allowed values are {', '.join(COMPILE_MODES)}")
    return mode


def wants_compiled(first: torch.Tensor) -> bool:
    """Whether a call whose first argument is `first` should run compiled, per `compile_mode`."""
    mode = compile_mode()
    if mode == "0" or first.device.type != "cpu":  # CUDA is unmeasured here (issue 14's GPU check)
        return False
    return mode == "1" or math.prod(first.shape[-2:]) > MIN_FRAME_PIXELS


def fused(function: Function) -> Function:
    """`function` compiled (dynamic shapes, compiled on first use) for the calls `wants_compiled` picks, eager otherwise."""
    state: dict[str, Any] = {"compiled": None, "failed": False}

    @functools.wraps(function)
    def run(first: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if state["failed"] or not wants_compiled(first):
            return function(first, *args, **kwargs)
        if state["compiled"] is None:
            state["compiled"] = torch.compile(function, dynamic=True)
        try:
            return state["compiled"](first, *args, **kwargs)
        except Exception as error:  # no C++ compiler, an unsupported platform: eager gives the same numbers
            state["failed"] = True
            log.warning("torch.compile of %s failed (%s: %s); running it eagerly from now on (same numbers, slower). "
                        "%s=0 skips compiling.", function.__qualname__, type(error).__name__, error, COMPILE_ENV)
            return function(first, *args, **kwargs)

    return run  # type: ignore[return-value]
