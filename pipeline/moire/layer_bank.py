"""A bank of moiré layers rendered once and reused: synthesis at a fraction of the physics' cost.

The moiré layer (`moire_layer`: what a camera makes of a plain white screen) is more than half of a
pair's cost at 512² (docs/benchmarks.md, "Synthesis speed after profiling"). With a bank of N slots
(`synthesize.moire_layer_bank`), each slot's capture geometry is drawn from the seed and the slot
alone and its layer rendered once per process; a pair takes a slot and one of eight orientations
(turned by 90° steps, perhaps mirrored: a panel mounted in portrait, a mirrored subpixel order), as
UniDemoiré reuses each photographed pattern many times. A pair's bytes therefore depend only on
the seed, its index and the params, never on which process rendered which slot first.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from pipeline.config import SynthesizeParams
from pipeline.moire.simulate import CaptureParams, capture_tensors, moire_layer, sample_capture_params, sensor_side

BANK_STREAM = 0x4C415952  # "LAYR": apart from the pairs' own streams
ORIENTATIONS = 8  # four quarter turns, each plain or mirrored
# A slot's geometry is drawn as a capture's is; its crop draws need a source shape, and a fixed one
# keeps the draws after them (the layer's contrast) independent of any pair's source.
SLOT_SOURCE_SHAPE = (4096, 4096)
# What a capture's layer depends on, and so what a pair takes from its slot: the screen's grid, the
# camera's distance, pose and lens, its pixels and filters, and the ISP's colour matrix and chroma
# smoothing. The content is warped with the same pose, so the pair's photo and its target stay one geometry.
SLOT_FIELDS = (
    "subpixel_layout", "fill_factor", "display_pitch_mm", "distance_mm", "focal_length_mm", "sensor_pitch_um",
    "pitch_ratio", "downscale", "beat_period_px", "rotation_deg", "tilt", "tilt_direction_deg",
    "radial_distortion", "blur_sigma", "defocus_spread", "focus_position", "sensor_aperture", "chroma_denoise",
    "moire_contrast", "display_size", "demosaic", "crosstalk",
)


def slot_geometry(cfg: SynthesizeParams, seed: int, slot: int) -> CaptureParams:
    """The capture whose layer fills `slot`: drawn from (seed, slot) alone."""
    return sample_capture_params(cfg, SLOT_SOURCE_SHAPE, np.random.default_rng([seed, BANK_STREAM, slot]))


def orient(layer: torch.Tensor, orientation: int) -> torch.Tensor:
    """(C, S, S) `layer` turned by `orientation` % 4 quarter turns, then mirrored left–right when it is ≥ 4."""
    turned = torch.rot90(layer, orientation % 4, dims=(-2, -1))
    return torch.flip(turned, dims=(-1,)) if orientation >= 4 else turned


def oriented_pose(rotation_deg: float, tilt_direction_deg: float, orientation: int) -> tuple[float, float]:
    """(rotation, tilt direction) of the pose whose perspective an `orient`ed layer shows, for the content's warp.

    A quarter turn (rows towards columns) moves a direction in the frame by −90° and leaves a rotation
    as it is (a square grid turned by 90° is the same grid); mirroring left–right takes a direction φ
    to 180° − φ and a rotation θ to −θ.
    """
    direction = (tilt_direction_deg - 90.0 * (orientation % 4)) % 360.0
    if orientation >= 4:
        return -rotation_deg, (180.0 - direction) % 360.0
    return rotation_deg, direction


class LayerBank:
    """The slots of one dataset's bank (params and seed), each rendered on first use and kept."""

    def __init__(self, cfg: SynthesizeParams, seed: int):
        if not cfg.moire_layer_bank:
            raise ValueError("synthesize.moire_layer_bank is not set")
        self.cfg, self.seed, self.slots = cfg, seed, cfg.moire_layer_bank
        self._geometry: dict[int, CaptureParams] = {}
        self._layers: dict[tuple[int, int, int, str], torch.Tensor] = {}

    def geometry(self, slot: int) -> CaptureParams:
        """The capture geometry of `slot`."""
        if slot not in self._geometry:
            self._geometry[slot] = slot_geometry(self.cfg, self.seed, slot)
        return self._geometry[slot]

    def assign(self, capture: CaptureParams, source_shape: tuple[int, int], rng: np.random.Generator) -> CaptureParams:
        """`capture` (of a source of `source_shape`) with a slot, an orientation and the slot's geometry.

        The pose is the one the oriented layer shows (`oriented_pose`), so the content is warped as its
        moiré was made. Only physical layered captures use the bank (a drawn band pattern or a moiré-free
        capture has no layer); the others are returned as they are. The crop keeps its source pixels per
        display pixel at the slot's display size, at a place drawn anew where it fits.
        """
        if not capture.moire_layer or capture.pattern is not None or capture.moire_free:
            return capture
        slot, orientation = int(rng.integers(self.slots)), int(rng.integers(ORIENTATIONS))
        geometry = self.geometry(slot)
        rotation, direction = oriented_pose(geometry.rotation_deg, geometry.tilt_direction_deg, orientation)
        height, width = source_shape
        side = min(height, width, max(1, round(capture.crop_side * geometry.display_size / capture.display_size)))
        taken = {name: getattr(geometry, name) for name in SLOT_FIELDS} | {"rotation_deg": rotation,
                                                                         "tilt_direction_deg": direction}
        return replace(capture, **taken, crop_side=side, crop_x=int(rng.integers(0, width - side + 1)),
                       crop_y=int(rng.integers(0, height - side + 1)), layer_slot=slot, layer_orientation=orientation)

    def layers(self, captures: list[CaptureParams], out_size: int, supersample: int, device: torch.device) -> torch.Tensor:
        """(B, 3, S, S) each capture's slot layer, in its orientation, on `device`."""
        return torch.stack([orient(self._layer(c.layer_slot, out_size, supersample, device), c.layer_orientation)
                            for c in captures])

    def fill(self, out_size: int, supersample: int, device: torch.device) -> None:
        """Render every slot's layer now (a benchmark times the bank apart from the pairs that reuse it)."""
        for slot in range(self.slots):
            self._layer(slot, out_size, supersample, device)

    def _layer(self, slot: int, out_size: int, supersample: int, device: torch.device) -> torch.Tensor:
        """`slot`'s layer at `out_size`, rendered the first time it is asked for on `device`."""
        key = (slot, out_size, supersample, str(device))
        if key not in self._layers:
            geometry = self.geometry(slot)
            p = capture_tensors([geometry], device)
            frame = sensor_side(out_size, geometry.downscale)
            self._layers[key] = moire_layer([geometry], p, geometry.display_size, frame, out_size, supersample)[0]
        return self._layers[key]


_banks: dict[str, LayerBank] = {}


def shared_layer_bank(cfg: SynthesizeParams, seed: int) -> LayerBank | None:
    """The bank of (cfg, seed) this process keeps between pairs; None when cfg has none.

    One bank at a time, so a process that renders several datasets holds only the current one's layers.
    """
    if not cfg.moire_layer_bank:
        return None
    key = f"{seed} {cfg.model_dump_json(exclude={'workers', 'dask_address'})}"
    if key not in _banks:
        _banks.clear()
        _banks[key] = LayerBank(cfg, seed)
    return _banks[key]
