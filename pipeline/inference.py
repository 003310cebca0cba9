"""Apply a restoration model to whole images of any size, tile by tile with blended overlaps.

A 4K frame through the default U-Net needs a few GB of activations at once; tiles bound that by the
tile size, so the same code runs on a small GPU or a CPU. Seams are avoided by overlapping the
tiles, dropping each tile's outermost overlap pixels (where the convolutions saw padding instead of
the neighbouring image) and cross-fading the rest of the overlap with a raised-cosine ramp.
"""

from __future__ import annotations

from itertools import groupby
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.dataset import to_image, to_tensor
from pipeline.errors import ParamsError
from pipeline.moire.jpeg import RGB_TO_YCBCR


class RestoreStopped(Exception):
    """Tiled restoration stopped early because `should_stop` said so (a served request's time ran out)."""

DEFAULT_TILE_SIZE, DEFAULT_TILE_OVERLAP, DEFAULT_TILE_BATCH = 512, 32, 1
# Share of the overlap, at each tile's cut edge, that is dropped rather than blended: on the trained
# default U-Net it cut the mean tiled-vs-whole difference by 35-75 % against a ramp over the whole overlap.
EDGE_DROP = 0.25

Span = tuple[int, int]


def spatial_multiple(model: nn.Module) -> int:
    """The size step of the model's downsampling grid (1 for fully convolutional models)."""
    from pipeline.models.mscale import MULTIPLE, MultiScaleDemoireNet

    if isinstance(model, MultiScaleDemoireNet):
        return MULTIPLE
    return int(getattr(model, "multiple", 1))  # SmallUNet.multiple, RestrictedCorrection.multiple; SimpleCNN has none


def input_format(model: nn.Module, device: torch.device) -> torch.memory_format:
    """The memory layout `model` is trained and run in: channels_last, where its convolutions run faster, except for
    the multi-scale net on CPU, which runs 5–10 % slower in it (on CPU the U-Net restores 1.2× and trains 1.15×
    faster in it, the plain CNN restores 1.8× faster; docs/benchmarks.md, "Tiled inference")."""
    from pipeline.models.mscale import MultiScaleDemoireNet

    if device.type == "cpu" and isinstance(getattr(model, "net", model), MultiScaleDemoireNet):
        return torch.contiguous_format
    return torch.channels_last


def in_layout(batch: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """A copy of the B×C×H×W `batch` in `memory_format`.

    A copy, not `.contiguous(memory_format=…)`: a batch of one permuted from H×W×3 counts as channels_last
    already, yet its odd batch stride leads the next padding (the models' first, SSIM's) back to the slow layout.
    """
    return batch.clone(memory_format=memory_format)


def _forward(model: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, multiple: int,
             memory_format: torch.memory_format) -> torch.Tensor:
    """The model (or its pointwise part) on a B×3×H×W batch laid out in `memory_format`, clamped; sides below
    `multiple` are edge-padded first.

    The models reflect-pad to their multiple, which needs the image side larger than the pad.
    """
    batch = in_layout(batch, memory_format)
    height, width = batch.shape[-2:]
    pad_h, pad_w = max(multiple - height, 0), max(multiple - width, 0)
    if pad_h or pad_w:
        batch = F.pad(batch, (0, pad_w, 0, pad_h), mode="replicate")
    return model(batch).clamp(0, 1)[..., :height, :width]


@torch.no_grad()
def restore_tensor(model: nn.Module, moire: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Restore one 3×H×W image in [0, 1] in one pass (untiled); returns it clamped to [0, 1] on the CPU."""
    model.eval()
    return _forward(model, moire[None].to(device), spatial_multiple(model), input_format(model, device))[0].cpu()


def tile_spans(length: int, tile: int, overlap: int, multiple: int = 1) -> list[Span]:
    """[start, end) spans covering 0..length: `tile` long, the last one cut short at the image's end.

    Starts are multiples of `multiple`, so every tile meets the model's downsampling grid as the
    whole image does, and the last one ends where the image does, padded inside the model as the
    whole image is. Neighbours share at least `overlap` pixels; nothing is computed twice beyond that.
    """
    if length <= tile:
        return [(0, length)]
    stride = (tile - overlap) // multiple * multiple
    if stride < multiple:
        raise ParamsError(f"tile {tile} with overlap {overlap} leaves no stride that is a multiple of {multiple}")
    # The last start is the first whose tile reaches the end; its span is at least tile - stride long.
    return [(start, min(start + tile, length)) for start in range(0, length - tile + stride, stride)]


def blend_weights(spans: list[Span], overlap: int) -> list[np.ndarray]:
    """Per span, 1-D weights: 0 on the dropped edge, a raised-cosine ramp, then 1; no ramp at the image border."""
    drop = int(round(overlap * EDGE_DROP))
    ramp_length = overlap - 2 * drop
    # sin² rising over the ramp: a tile's rising ramp and its neighbour's falling one sum to 1.
    ramp = np.sin(np.pi / 2 * (np.arange(ramp_length) + 0.5) / max(ramp_length, 1)) ** 2
    edge = np.concatenate([np.zeros(drop), ramp]).astype(np.float32)
    weights = []
    for index, (start, end) in enumerate(spans):
        weight = np.ones(end - start, dtype=np.float32)
        if len(edge) and index > 0:
            weight[: len(edge)] = edge
        if len(edge) and index < len(spans) - 1:
            weight[-len(edge):] = np.minimum(weight[-len(edge):], edge[::-1])
        weights.append(weight)
    return weights


def check_tiling(tile_size: int, overlap: int, batch_size: int = 1, multiple: int = 1) -> None:
    """Reject tile settings the blending cannot use, or that leave no stride on the model's grid."""
    if tile_size < 16 or not 0 <= overlap < tile_size / 2 or batch_size < 1:
        raise ParamsError(f"tile size {tile_size}, overlap {overlap}, batch {batch_size}: "
                          "need tile ≥ 16, 0 ≤ overlap < tile / 2 and batch ≥ 1")
    if tile_size - overlap < multiple:
        raise ParamsError(f"tile size {tile_size} minus overlap {overlap} is below this model's size step "
                          f"{multiple}; use a tile of at least {multiple + overlap}")


def _batches(tiles: list[tuple[int, int]], rows: list[Span], cols: list[Span], size: int) -> list[list[tuple[int, int]]]:
    """Consecutive tiles in groups of at most `size`, each group of one shape (so they stack)."""
    def shape(tile: tuple[int, int]) -> tuple[int, int]:
        (top, bottom), (left, right) = rows[tile[0]], cols[tile[1]]
        return bottom - top, right - left

    groups = []
    for _, same in groupby(tiles, key=shape):
        same = list(same)
        groups += [same[i: i + size] for i in range(0, len(same), size)]
    return groups


@torch.no_grad()
def restore_tiled(model: nn.Module, image: np.ndarray, device: torch.device, tile_size: int = DEFAULT_TILE_SIZE,
                  overlap: int = DEFAULT_TILE_OVERLAP, batch_size: int = DEFAULT_TILE_BATCH,
                  should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Restore an HxWx3 uint8 image tile by tile, blending the tiles into one HxWx3 uint8 image.

    `should_stop` is asked before each batch of tiles; when it answers True, RestoreStopped is raised."""
    multiple, memory_format = spatial_multiple(model), input_format(model, device)
    check_tiling(tile_size, overlap, batch_size, multiple)
    model.eval()
    # A restricted correction (pipeline.models.correction) is restored tile by tile up to its pointwise part;
    # its narrowing, which needs the whole image, runs once on the blended result.
    pointwise, narrowing = getattr(model, "pointwise", model), getattr(model, "narrowing", None)
    height, width = image.shape[:2]
    rows, cols = tile_spans(height, tile_size, overlap, multiple), tile_spans(width, tile_size, overlap, multiple)
    row_weights, col_weights = blend_weights(rows, overlap), blend_weights(cols, overlap)
    # Windows are separable and the tiles form a grid, so the summed weight is an outer product.
    row_sum, col_sum = np.zeros(height, np.float32), np.zeros(width, np.float32)
    for (start, end), weight in zip(rows, row_weights):
        row_sum[start:end] += weight
    for (start, end), weight in zip(cols, col_weights):
        col_sum[start:end] += weight
    restored = torch.zeros(3, height, width)
    tiles = [(r, c) for r in range(len(rows)) for c in range(len(cols))]
    for group in _batches(tiles, rows, cols, batch_size):
        if should_stop is not None and should_stop():
            raise RestoreStopped()
        # Tiles are converted from uint8 one by one, so no float copy of the whole image is made.
        batch = torch.stack([to_tensor(image[slice(*rows[r]), slice(*cols[c])]) for r, c in group])
        output = _forward(pointwise, batch.to(device), multiple, memory_format).float().cpu()
        for (r, c), tile in zip(group, output):
            restored[:, slice(*rows[r]), slice(*cols[c])] += tile * torch.from_numpy(np.outer(row_weights[r], col_weights[c]))
    restored /= torch.from_numpy(np.outer(row_sum, col_sum))
    if narrowing is not None and narrowing.width:
        _narrow_one_channel_at_a_time(narrowing, restored, image, device)
    return to_image(restored)


def _narrow_one_channel_at_a_time(narrowing: nn.Module, restored: torch.Tensor, image: np.ndarray,
                                  device: torch.device) -> None:
    """Narrow the blended `restored` (3×H×W, in place) as `narrowing(restored, image)` would, one channel at a time
    on the device (33 MB at 4K): each channel's wide part out, then its mean over the image back in."""
    wide_means, input_means = torch.zeros(1, 3), torch.zeros(1, 3)
    for channel in range(3):
        one = slice(channel, channel + 1)
        x = to_tensor(image[..., one])[None].to(device)
        wide = narrowing.wide(restored[None, one].to(device) - x)
        restored[channel] -= wide[0, 0].cpu()
        wide_means[0, channel], input_means[0, channel] = wide.mean().cpu(), x.mean().cpu()
    matrix, offset = narrowing.mean_as_map(wide_means, input_means)
    for channel in range(3):
        restored[channel] += offset[0, channel]
        for source in range(3):
            if matrix[0, channel, source]:
                restored[channel] += matrix[0, channel, source] * to_tensor(image[..., source:source + 1])[0]
        restored[channel].clamp_(0, 1)


def restore_image(model: nn.Module, image: np.ndarray, device: torch.device | str = "cpu",
                  tile_size: int = DEFAULT_TILE_SIZE, overlap: int = DEFAULT_TILE_OVERLAP,
                  batch_size: int = DEFAULT_TILE_BATCH, should_stop: Callable[[], bool] | None = None,
                  max_side: int | None = None, falloff: float = 0.0) -> np.ndarray:
    """Restore one HxWx3 uint8 RGB image of any size; tiled when a side exceeds `tile_size` (see restore_tiled
    for `should_stop`); with `max_side`, a larger image is restored at the size whose longer side is `max_side`
    (see restore_shrunk); with `falloff`, that share of the screen falloff estimated on the whole image is undone
    (pipeline.falloff)."""
    from pipeline.falloff import correct_falloff

    device = torch.device(device)
    if max_side is not None and max(image.shape[:2]) > max_side:
        restored = restore_shrunk(lambda small: restore_image(model, small, device, tile_size, overlap, batch_size,
                                                              should_stop), image, max_side)
    elif max(image.shape[:2]) <= tile_size:
        restored = to_image(restore_tensor(model, to_tensor(image), device))
    else:
        restored = restore_tiled(model, image, device, tile_size, overlap, batch_size, should_stop)
    restored = correct_falloff(restored, image, falloff)
    return grey_of(restored) if is_grey(image) else restored


def is_grey(image: np.ndarray) -> bool:
    """Whether every pixel's three channels are equal: a greyscale photo, which holds no colour moiré to remove."""
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def grey_of(image: np.ndarray) -> np.ndarray:
    """Each pixel's luma (BT.601, the luma a chroma correction keeps) in all three channels: a grey photo's
    restoration stays grey, where a network trained on colour photos would tint it by a few levels."""
    red, green, blue = RGB_TO_YCBCR[0]
    luma = image[..., 0] * np.float32(red)
    luma += image[..., 1] * np.float32(green)
    luma += image[..., 2] * np.float32(blue)
    grey = np.clip(np.rint(luma, out=luma), 0, 255, out=luma).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def restore_shrunk(restore: Callable[[np.ndarray], np.ndarray], image: np.ndarray, max_side: int) -> np.ndarray:
    """`image` (HxWx3 uint8) plus the correction `restore` makes to it shrunk to a longer side of `max_side`,
    enlarged back (bicubic) to its size.

    A photo's moiré is as wide in pixels as its resolution makes it: the bands of a 4K photo are twice as wide as
    a 1080p photo's of the same screen, and can lie past the periods a model trained on small pairs removes
    (docs/benchmarks.md, "Restoring large photos at a smaller size"). Shrunk, they fall where it removes them; only
    the correction is enlarged, so the photo keeps its full-size detail.
    """
    import cv2  # imported here: the library's other inference paths do not need OpenCV

    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    small = cv2.resize(image, (max(round(width * scale), 1), max(round(height * scale), 1)),
                       interpolation=cv2.INTER_AREA)
    correction = restore(small).astype(np.float32) - small.astype(np.float32)
    restored = cv2.resize(correction, (width, height), interpolation=cv2.INTER_CUBIC)
    restored += image  # in place: one float copy of a full-size photo, not three
    return np.clip(np.rint(restored, out=restored), 0, 255, out=restored).astype(np.uint8)
