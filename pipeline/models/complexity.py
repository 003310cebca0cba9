"""Compute cost of a model at a given input size, counted without running it on real memory."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode


def count_macs(model: nn.Module, height: int, width: int) -> int:
    """Multiply–accumulates of one forward pass on a 1×3×`height`×`width` image (FLOPs / 2).

    Counts convolutions, transposed convolutions and matrix products (what FlopCounterMode knows);
    element-wise work (activations, additions, pooling, interpolation) is not counted.
    """
    # Meta tensors carry shapes only, so a 4K count allocates nothing; the model itself is untouched.
    meta_state = {name: torch.empty_like(t, device="meta")
                  for name, t in [*model.named_parameters(), *model.named_buffers()]}
    image = torch.empty(1, 3, height, width, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        functional_call(model, meta_state, (image,))
    return counter.get_total_flops() // 2
