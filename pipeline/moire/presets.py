"""Named sets of synthesis ranges; params.yaml values given explicitly override a preset's.

`default` is the physics of docs/benchmarks.md ("Captures that look like real ones"): a phone
camera at its own resolution, shrunk to the dataset's size, auto-exposed, with the grids beating at
periods drawn from a range, and a target that is the same photo without moiré. The others shift one property
(`fine`, `coarse`, `document`) or reproduce the simulator before that work (`classic`). A preset
file (`demoire calibrate` writes them) sets ranges on top of one of these.
"""

from __future__ import annotations

from pathlib import Path

import yaml

PRESETS: dict[str, dict] = {
    # A phone photographing a laptop or monitor, auto-exposed, the frame shrunk to the dataset's
    # size; the grids beat at periods of 6–120 output pixels; the target is the same photo without
    # moiré, blur, noise or compression (see pipeline/config.py for every range and why).
    "default": {},
    # Narrow, high-frequency moiré: periods of 3–12 output pixels.
    "fine": {"optics": {"beat_period_px": [3.0, 12.0]}},
    # Wide colour bands: periods of 40–250 output pixels, from the Bayer mosaic's colour aliasing.
    "coarse": {"optics": {"beat_period_px": [40.0, 250.0], "resonance_orders": [1]}},
    # Text, code, UI and web screens only (no photos, scenes or charts): what users most often photograph.
    "document": {"sources": {"bundled": False, "procedural": 96, "screen_kinds": ["document", "code", "ui", "webpage"]}},
    # The simulator before issue 13, for comparison: captured at the dataset's resolution, a fixed
    # exposure that darkens, pitch ratio from the distance alone, the source image as the target.
    "classic": {
        "sources": {"procedural": 64, "screen_kinds": ["document", "code", "ui", "chart", "webpage"]},
        "display": {"pixel_pitch_mm": [0.25, 0.28], "black_level": [0.0, 0.003]},
        "optics": {"distance_mm": [300.0, 500.0], "focal_length_mm": [4.3, 4.8], "blur_sigma": [0.2, 0.6],
                   "supersample": 2, "beat_period_px": None},
        "sensor": {"pixel_pitch_um": [2.9, 3.1], "aperture": [0.65, 0.95], "output_pitch": None,
                   "auto_exposure": False, "exposure_ev": [-0.5, 0.1]},
        "isp": {"black_point": [0.0, 0.0], "chroma_denoise": [0.0, 0.0], "output_blur": [0.0, 0.0],
                "gamma": [2.0, 2.4], "jpeg_quality": [70.0, 95.0]},
        "moire_model": "render", "target_tone": "source",
    },
}
PRESET_FILE_SUFFIXES = (".yaml", ".yml")
# What a preset may set: the physics and the sources, never the size or count of a dataset.
PRESET_SECTIONS = ("display", "optics", "sensor", "isp", "patterns", "sources", "moire_model", "target_tone",
                   "target_detail")


def preset_values(preset: str) -> dict:
    """The values a preset sets: a built-in one by name, or a preset file's on top of its `base` preset.

    Raises ValueError (reported as the `synthesize.preset` key) for an unknown name, a missing or
    malformed file, or a file that sets anything but the physics and sources.
    """
    if preset in PRESETS:
        return PRESETS[preset]
    if not preset.endswith(PRESET_FILE_SUFFIXES):
        raise ValueError(f"preset {preset!r} is neither a built-in preset ({', '.join(PRESETS)}) "
                         f"nor a preset file ({' or '.join(PRESET_FILE_SUFFIXES)})")
    path = Path(preset)
    try:
        values = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ValueError(f"preset file {preset} cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"preset file {preset} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ValueError(f"preset file {preset} must hold a mapping of sections")
    base = values.pop("base", "default")
    if not isinstance(base, str) or base not in PRESETS:
        raise ValueError(f"preset file {preset}: base {base!r} is not one of {', '.join(PRESETS)}")
    unknown = sorted(set(values) - set(PRESET_SECTIONS))
    if unknown:
        raise ValueError(f"preset file {preset} sets {', '.join(unknown)}; a preset may set only "
                         f"{', '.join(PRESET_SECTIONS)}")
    from pipeline.config import deep_merge

    return deep_merge(PRESETS[base], values)
