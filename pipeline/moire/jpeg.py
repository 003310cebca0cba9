"""Baseline JPEG compression of the camera's frame, batched with a quality per image.

On the CPU a frame goes through libjpeg itself (`camera_jpeg`: OpenCV's libjpeg-turbo, the codec
behind most camera and phone JPEGs): 8-bit levels in, the accurate integer DCT, 4:2:0, the IJG
tables scaled by quality, fancy upsampling out. It computes in integers, so no CPU can reorder a float
sum in it, and is 3× faster than the torch model on one core at 512² (docs/benchmarks.md).

On other devices, `jpeg_compress` models the lossy part in torch: colour conversion, 4:2:0 chroma
subsampling and quantisation of 8×8 DCT blocks with the same tables; entropy coding is lossless and
is skipped. It lets training synthesise pairs on the GPU without a round trip through the codec,
and loses as much (RMS error 6.92 levels against libjpeg's 6.95 on a 512² frame at quality 90).

The torch model's arithmetic runs in float64. Quantisation rounds every DCT coefficient and the decoder every
level, so a float32 sum's last bit, which BLAS libraries order differently on different CPUs (Intel
MKL picks its kernels by CPU model and instruction set), turns into whole levels: 45 of 960 images of
the default set differed between MKL's default and its `MKL_CBWR=COMPATIBLE` path in float32, none in
float64 (docs/benchmarks.md). A float64 sum's order moves it by ~1e-13 of a level, which tips a rounding
only for a value that close to a half.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.moire.isp import to_uint8

# ITU-T T.81 Annex K tables.
LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56), (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)
CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99), (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99), (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99), (99, 99, 99, 99, 99, 99, 99, 99),
)
# JFIF RGB → YCbCr (rows: Y, Cb, Cr), values in 0..255 with chroma offset 128.
RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def quantisation_tables(quality: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 8, 8) luma and chroma tables for each image's quality (1–100), as libjpeg scales them."""
    q = quality.to(torch.float32).clamp(1, 100).reshape(-1, 1, 1)
    scale = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)
    tables = []
    for base in (LUMA_TABLE, CHROMA_TABLE):
        table = torch.tensor(base, dtype=torch.float32, device=device)
        tables.append(torch.floor((table * scale + 50.0) / 100.0).clamp(1.0, 255.0))
    return tables[0], tables[1]


def dct_matrix(device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix."""
    k = torch.arange(8, dtype=dtype, device=device).reshape(-1, 1)
    n = torch.arange(8, dtype=dtype, device=device).reshape(1, -1)
    matrix = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    matrix[0] /= math.sqrt(2)
    return matrix


def _quantise_plane(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """DCT, quantise with (B, 8, 8) tables, and invert one (B, H, W) plane; H, W multiples of 8.

    Each 8×8 block's 2-D DCT is one 64×64 matrix (the Kronecker product of the 1-D one with itself)
    on the block's 64 values in a row, so a plane's blocks transform as one matrix product (on one CPU
    core 1.23 ms for a 512² plane against 1.31 for pairs of batched 8×8 products).
    """
    batch, height, width = plane.shape
    d = dct_matrix(plane.device, plane.dtype)
    basis = torch.kron(d, d)
    blocks = (plane - 128.0).reshape(batch, height // 8, 8, width // 8, 8).permute(0, 1, 3, 2, 4)
    coefficients = blocks.reshape(batch, -1, 64) @ basis.T
    table = table.to(plane.dtype).reshape(batch, 1, 64)
    restored = coefficients.div_(table).round_().mul_(table) @ basis
    return restored.reshape(batch, height // 8, width // 8, 8, 8).permute(0, 1, 3, 2, 4).reshape(batch, height, width) + 128.0


def jpeg_compress(rgb: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Compress and decompress (B, 3, H, W) images in [0, 1] at each image's quality; same shape out."""
    batch, _, height, width = rgb.shape
    pad_h, pad_w = (-height) % 16, (-width) % 16  # whole 16×16 macroblocks, as encoders pad
    pixels = rgb.to(torch.float64).clamp(0, 1)  # float64: the same roundings on any CPU (module docstring)
    if pad_h or pad_w:
        pixels = F.pad(pixels, (0, pad_w, 0, pad_h), mode="replicate")
    to_ycbcr = torch.tensor(RGB_TO_YCBCR, dtype=pixels.dtype, device=pixels.device)
    ycbcr = torch.einsum("ij,bjhw->bihw", to_ycbcr * 255.0, pixels)
    ycbcr[:, 1:] += 128.0
    luma_table, chroma_table = quantisation_tables(quality, rgb.device)
    luma = _quantise_plane(ycbcr[:, 0], luma_table)
    chroma = ycbcr[:, 1:]
    # 4:2:0: the mean of each 2×2 block, from four strided views (3× faster than avg_pool2d on one core)
    chroma = (chroma[..., 0::2, 0::2] + chroma[..., 1::2, 0::2]).add_(chroma[..., 0::2, 1::2]).add_(chroma[..., 1::2, 1::2])
    chroma = torch.stack([_quantise_plane(chroma[:, c].mul_(0.25), chroma_table) for c in (0, 1)], dim=1)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    decoded = torch.cat([luma.unsqueeze(1), chroma.sub_(128.0)], dim=1)
    restored = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_ycbcr), decoded)
    # Decoders round to 8-bit; keep that step so bytes match what a camera file would hold.
    return restored.round_().clamp_(0, 255).div_(255.0)[:, :, :height, :width].to(rgb.dtype)


def camera_jpeg(rgb: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Compress and decompress (B, 3, H, W) images in [0, 1] at each image's quality: libjpeg on the CPU,
    `jpeg_compress` elsewhere; same shape and dtype out, on 8-bit levels."""
    if rgb.device.type != "cpu":
        return jpeg_compress(rgb, quality)
    qualities = quality.reshape(-1).expand(rgb.shape[0]).tolist()  # one for all, or one per image
    levels = to_uint8(rgb.detach()).permute(0, 2, 3, 1).numpy()
    decoded = np.stack([_libjpeg_roundtrip(image, int(q)) for image, q in zip(levels, qualities)])
    return torch.from_numpy(decoded).permute(0, 3, 1, 2).contiguous().to(rgb.dtype).div_(255.0)


def _libjpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """One (H, W, 3) uint8 RGB image encoded by libjpeg at `quality` (4:2:0, OpenCV's default) and decoded."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])  # OpenCV's channel order, so libjpeg's luma weighs them right
    encoded, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not encoded:
        raise RuntimeError(f"libjpeg could not encode a {rgb.shape[1]}×{rgb.shape[0]} frame")
    return cv2.imdecode(buffer, cv2.IMREAD_COLOR)[..., ::-1]
