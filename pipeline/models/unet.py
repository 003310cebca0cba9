"""A small U-Net: moiré bands span tens of pixels, so features at coarse scales pay off.

The stem folds each 2×2 block into channels (pixel unshuffle, lossless), so the first level already
works at half resolution: about half the compute of a full-resolution first level, with a larger
receptive field for the same depth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ParamsError

STEM_FACTOR = 2


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3×3 conv + LeakyReLU layers."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
    )


class SmallUNet(nn.Module):
    """Encoder–decoder with `levels` resolutions (channels double per level) and a global residual."""

    def __init__(self, channels: int = 32, levels: int = 3):
        super().__init__()
        if not 2 <= levels <= 5:
            raise ParamsError(f"train.depth = {levels}: the unet model takes 2 to 5 levels")
        widths = [channels * 2**i for i in range(levels)]
        folded = 3 * STEM_FACTOR**2
        self.stem = nn.Sequential(nn.PixelUnshuffle(STEM_FACTOR), _conv_block(folded, widths[0]))
        self.down = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.encode = nn.ModuleList(_conv_block(b, b) for b in widths[1:])
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths, widths[1:]))
        self.decode = nn.ModuleList(_conv_block(2 * a, a) for a in widths[:-1])
        self.head = nn.Sequential(nn.Conv2d(widths[0], folded, 3, padding=1), nn.PixelShuffle(STEM_FACTOR))
        self.multiple = STEM_FACTOR * 2 ** (levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.multiple, (-width) % self.multiple
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else x
        features = [self.stem(padded)]
        for down, encode in zip(self.down, self.encode):
            features.append(encode(down(features[-1])))
        y = features.pop()
        for up, decode in zip(reversed(self.up), reversed(self.decode)):
            y = decode(torch.cat([up(y), features.pop()], dim=1))
        return x + self.head(y)[..., :height, :width]
