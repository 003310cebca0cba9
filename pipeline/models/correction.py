"""What a restorer may change: its whole correction, or only the correction's colour (chroma).

Screen moiré in phone photos is mostly colour: the camera's colour mosaic aliases the screen's
subpixel grid into colour bands, while its luma is what the photo's tone, blur and alignment
shape too — and those differ from one real set to the next. A model that may change only the
chroma of its input keeps every photo's luma (tone and detail) as it is and removes the colour bands.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ParamsError
from pipeline.models.mscale import image_pyramid

CORRECTIONS = ("full", "chroma")
# ITU-R BT.601 luma and colour differences of (gamma-encoded) RGB, as JPEG defines YCbCr.
RGB_TO_YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                            dtype=torch.float64)


def chroma_projection() -> torch.Tensor:
    """The 3×3 map of an RGB difference to the difference with the same Cb and Cr and no luma."""
    keep_chroma = torch.diag(torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))
    return (torch.linalg.inv(RGB_TO_YCBCR) @ keep_chroma @ RGB_TO_YCBCR).float()


class ChromaCorrection(nn.Module):
    """`net`'s output with the luma of its correction removed: x + P (net(x) − x), P = chroma_projection()."""

    def __init__(self, net: nn.Module):
        super().__init__()
        from pipeline.inference import spatial_multiple

        self.net = net
        self.multiple = spatial_multiple(net)  # tiles and padding follow the wrapped net's grid
        # a 1×1 convolution: pointwise, so tiles and exports see the same map; not part of the weights
        self.register_buffer("projection", chroma_projection()[:, :, None, None], persistent=False)

    def chroma_of(self, restored: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """`x` plus the chroma of `restored − x`."""
        return x + F.conv2d(restored - x, self.projection.to(restored.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.chroma_of(self.net(x), x)


class MultiScaleChromaCorrection(ChromaCorrection):
    """ChromaCorrection of a multi-scale net, its coarser outputs too (for deep supervision)."""

    def forward_multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The net's [full, 1/2, 1/4] outputs, each with only the chroma of its correction of the input at that scale."""
        return [self.chroma_of(output, scaled) for output, scaled in zip(self.net.forward_multiscale(x), image_pyramid(x))]


def with_correction(net: nn.Module, correction: str) -> nn.Module:
    """`net` as it is (`full`) or wrapped so only the chroma of its correction reaches the output (`chroma`)."""
    if correction == "full":
        return net
    if correction == "chroma":
        return MultiScaleChromaCorrection(net) if hasattr(net, "forward_multiscale") else ChromaCorrection(net)
    raise ParamsError(f"correction {correction!r}: choose one of {', '.join(CORRECTIONS)}")
