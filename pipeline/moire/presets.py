"""Named sets of synthesis ranges; params.yaml values given explicitly override a preset's.

`default` is calibrated so its input PSNR (moiré vs clean) matches real photos of screens
(see docs/benchmarks.md, "Calibration"); the others shift one property while keeping the rest.
The pitch ratio follows from distance: with the default display, lens and sensor pitches it is
about 405 / distance_mm, so 1.0 at 405 mm, where moiré bands are widest.
"""

from __future__ import annotations

from pathlib import Path

import yaml

PRESETS: dict[str, dict] = {
    "default": {},
    # Display pitch well below the sensor's (ratio 0.54–0.90): many narrow, high-frequency bands.
    "fine": {"optics": {"distance_mm": [520.0, 650.0], "blur_sigma": [0.1, 0.4]}},
    # Ratio within 0.92–1.09 and little rotation: wide colour bands across the frame.
    "coarse": {
        "display": {"pixel_pitch_mm": [0.26, 0.27]},
        "optics": {"distance_mm": [390.0, 420.0], "focal_length_mm": [4.5, 4.6], "rotation_deg": [-3.0, 3.0]},
        "sensor": {"pixel_pitch_um": [2.95, 3.05]},
    },
    # Text, code, UI and web screens only (no photos or charts): what users most often photograph.
    "document": {"sources": {"bundled": False, "procedural": 96, "screen_kinds": ["document", "code", "ui", "webpage"]}},
}

PRESET_FILE_SUFFIXES = (".yaml", ".yml")
# What a preset may set: the physics and the sources, never the size or count of a dataset.
PRESET_SECTIONS = ("display", "optics", "sensor", "isp", "patterns", "sources", "target_tone")


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
    if base not in PRESETS:
        raise ValueError(f"preset file {preset}: base {base!r} is not one of {', '.join(PRESETS)}")
    unknown = sorted(set(values) - set(PRESET_SECTIONS))
    if unknown:
        raise ValueError(f"preset file {preset} sets {', '.join(unknown)}; a preset may set only "
                         f"{', '.join(PRESET_SECTIONS)}")
    from pipeline.config import deep_merge

    return deep_merge(PRESETS[base], values)
