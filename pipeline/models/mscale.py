"""A multi-scale demoiré network in the ESDNet / MBCNN family, written from the papers' descriptions.

Moiré bands of one photo range from a few pixels to hundreds, and their scale changes across the frame
with the camera's distance and tilt. Two ideas from the literature address that:

- ESDNet (Yu et al., ECCV 2022): inside every encoder and decoder level, a scale-aware module runs the
  same features at 1, 1/2 and 1/4 of that level's resolution, then blends the three per channel with
  squeeze-excitation weights computed from the image itself, so each channel picks the scale its
  moiré lives at. Dilated residual dense blocks widen the receptive field cheaply.
- MBCNN (Zheng et al., CVPR 2020) and ESDNet: restored images at several scales, each supervised
  against the downsampled target (deep supervision), which steers the coarse levels toward removing
  the wide, low-frequency bands.

Layout: pixel-unshuffle stem (×2), then three levels at 1/2, 1/4 and 1/8 of the input resolution with
widths `channels`, 2·`channels`, 4·`channels`. Each encoder and decoder level is `depth` dilated
residual dense blocks followed by one scale-aware fusion. Each decoder level has a head that predicts
a correction at 1, 1/2 or 1/4 of the input resolution, added to the input downsampled to that scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ParamsError

STEM_FACTOR = 2
LEVELS = 3
FUSION_SCALES = (1, 2, 4)  # resolution divisors inside one scale-aware fusion
DILATIONS = (1, 2, 3)  # no common factor, so stacked dilations leave no gridding holes
# The input is already a fair restoration; small initial corrections keep early training from undoing it.
HEAD_INIT_SCALE = 0.1
# Everything inside is an exact halving: the stem, LEVELS - 1 strided convs, and the coarsest fusion scale.
MULTIPLE = STEM_FACTOR * 2 ** (LEVELS - 1) * FUSION_SCALES[-1]


def pyramid_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Sizes of the [full, 1/2, 1/4] outputs for an input of `height`×`width`: ceil(size / 2**k)."""
    return [(-(-height // 2**k), -(-width // 2**k)) for k in range(LEVELS)]


def image_pyramid(image: torch.Tensor) -> list[torch.Tensor]:
    """[full, 1/2, 1/4] box-filtered copies of a batch, at `pyramid_sizes`: the deep-supervision targets.

    Odd sizes keep their last row/column as a partial box averaged over the pixels it covers.
    """
    return [image] + [F.avg_pool2d(image, 2**k, ceil_mode=True) for k in range(1, LEVELS)]


class DilatedResidualDenseBlock(nn.Module):
    """Three densely connected 3×3 convs with dilations 1, 2, 3, a 1×1 fusion, and a residual."""

    def __init__(self, width: int, growth: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Conv2d(width + i * growth, growth, 3, padding=d, dilation=d) for i, d in enumerate(DILATIONS)
        )
        self.fuse = nn.Conv2d(width + len(DILATIONS) * growth, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(F.leaky_relu(layer(torch.cat(features, dim=1)), 0.2))
        return x + self.fuse(torch.cat(features, dim=1))


class ScaleAwareFusion(nn.Module):
    """Features processed at 1, 1/2 and 1/4 resolution, blended per channel by softmax weights over scales."""

    def __init__(self, width: int, growth: int, reduction: int = 4):
        super().__init__()
        self.branches = nn.ModuleList(DilatedResidualDenseBlock(width, growth) for _ in FUSION_SCALES)
        squeezed = max(width // reduction, 4)
        # Squeeze–excitation over the concatenated scale descriptors: one weight per (scale, channel).
        self.excite = nn.Sequential(
            nn.Conv2d(len(FUSION_SCALES) * width, squeezed, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(squeezed, len(FUSION_SCALES) * width, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        per_scale = []
        for factor, branch in zip(FUSION_SCALES, self.branches):
            coarse = x if factor == 1 else F.avg_pool2d(x, factor)
            y = branch(coarse)
            per_scale.append(y if factor == 1 else F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        stacked = torch.stack(per_scale, dim=1)  # B, scales, C, H, W
        descriptor = stacked.mean(dim=(-2, -1)).flatten(1)[..., None, None]
        weights = self.excite(descriptor).view(x.shape[0], len(FUSION_SCALES), -1, 1, 1).softmax(dim=1)
        return x + (weights * stacked).sum(dim=1)


def _level(width: int, depth: int) -> nn.Sequential:
    """`depth` dilated residual dense blocks then one scale-aware fusion, at constant width."""
    growth = max(width // 2, 4)
    return nn.Sequential(*(DilatedResidualDenseBlock(width, growth) for _ in range(depth)),
                         ScaleAwareFusion(width, growth))


class MultiScaleDemoireNet(nn.Module):
    """Three-level encoder–decoder with scale-aware fusion; restores at full, 1/2 and 1/4 resolution.

    `channels` is the width of the finest level (doubling per level); `depth` is the number of dilated
    residual dense blocks in each encoder and decoder level, before its scale-aware fusion.
    """

    def __init__(self, channels: int = 32, depth: int = 2):
        super().__init__()
        if not 1 <= depth <= 8:
            raise ParamsError(f"train.depth = {depth}: the mscale model takes 1 to 8 blocks per level")
        widths = [channels * 2**i for i in range(LEVELS)]
        folded = 3 * STEM_FACTOR**2
        self.stem = nn.Sequential(nn.PixelUnshuffle(STEM_FACTOR), nn.Conv2d(folded, widths[0], 3, padding=1))
        self.encode = nn.ModuleList(_level(w, depth) for w in widths)
        self.down = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths, widths[1:]))
        self.merge = nn.ModuleList(nn.Conv2d(2 * a, a, 1) for a in widths[:-1])
        self.decode = nn.ModuleList(_level(w, depth) for w in widths)
        # Head k turns level k's features into a correction at 1/2**k of the input resolution.
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(w, folded, 3, padding=1), nn.PixelShuffle(STEM_FACTOR)) for w in widths
        )
        with torch.no_grad():
            for head in self.heads:
                head[0].weight.mul_(HEAD_INIT_SCALE)
                head[0].bias.zero_()

    def _decoder_features(self, padded: torch.Tensor) -> list[torch.Tensor]:
        """Decoder features of each level, finest first, for an input padded to MULTIPLE."""
        skips = []
        y = self.stem(padded)
        for level, encode in enumerate(self.encode):
            y = encode(y)
            if level < LEVELS - 1:
                skips.append(y)
                y = self.down[level](y)
        decoded = [self.decode[-1](y)]
        for level in reversed(range(LEVELS - 1)):
            y = self.merge[level](torch.cat([self.up[level](decoded[0]), skips[level]], dim=1))
            decoded.insert(0, self.decode[level](y))
        return decoded

    def forward_multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Restored [full, 1/2, 1/4] images, sized as `pyramid_sizes`, for deep supervision."""
        features = self._decoder_features(_pad_to_multiple(x))
        # The residual base is the unpadded input's pyramid, so it equals the targets' `image_pyramid`.
        return [base + head(f)[..., : base.shape[-2], : base.shape[-1]]
                for base, head, f in zip(image_pyramid(x), self.heads, features)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = _pad_to_multiple(x)
        finest = self._decoder_features(padded)[0]
        return x + self.heads[0](finest)[..., : x.shape[-2], : x.shape[-1]]


def _pad_to_multiple(x: torch.Tensor) -> torch.Tensor:
    """Reflect-pad bottom and right to a multiple of MULTIPLE, so every halving inside is exact."""
    pad_h, pad_w = (-x.shape[-2]) % MULTIPLE, (-x.shape[-1]) % MULTIPLE
    if not (pad_h or pad_w):
        return x
    # Reflect padding needs the pad smaller than the side; tiny inputs fall back to replicating the edge.
    mode = "reflect" if pad_h < x.shape[-2] and pad_w < x.shape[-1] else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
