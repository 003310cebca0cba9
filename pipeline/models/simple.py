"""The original design's plain CNN, fully convolutional, predicting a residual over its input."""

from __future__ import annotations

import torch
from torch import nn


class SimpleCNN(nn.Module):
    """`layers` 3×3 convolutions with ReLU; output = input + predicted correction."""

    def __init__(self, channels: int = 32, layers: int = 6):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(layers - 2):
            blocks += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        blocks.append(nn.Conv2d(channels, 3, 3, padding=1))
        self.body = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
