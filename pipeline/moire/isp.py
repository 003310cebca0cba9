"""The camera's image signal processor: demosaic, tone curve, JPEG."""

from __future__ import annotations

import cv2
import numpy as np


def demosaic(raw: np.ndarray) -> np.ndarray:
    """Bilinear demosaic of an RGGB mosaic in [0, 1] into HxWx3 RGB float32."""
    raw16 = np.round(np.clip(raw, 0, 1) * 65535).astype(np.uint16)
    # OpenCV names Bayer patterns by the second row's first two pixels: RGGB is its "BayerBG".
    rgb16 = cv2.cvtColor(raw16, cv2.COLOR_BayerBG2RGB)
    return rgb16.astype(np.float32) / 65535.0


def tone_curve(linear: np.ndarray, gamma: float) -> np.ndarray:
    """Encode linear light for display with a power-law tone curve, to [0, 1]."""
    return np.clip(linear, 0.0, 1.0) ** (1.0 / gamma)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float → uint8 with rounding."""
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def jpeg_roundtrip(rgb_u8: np.ndarray, quality: int) -> np.ndarray:
    """Compress as JPEG at `quality` (1–100) and decode again, as a camera's output would be."""
    ok, buffer = cv2.imencode(".jpg", rgb_u8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV failed to encode JPEG")
    return np.ascontiguousarray(cv2.imdecode(buffer, cv2.IMREAD_COLOR)[..., ::-1])
