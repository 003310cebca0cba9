"""Named sets of synthesis ranges; params.yaml values given explicitly override a preset's.

`default` is calibrated so its input PSNR (moiré vs clean) matches real photos of screens
(see docs/benchmarks.md, "Calibration"); the others shift one property while keeping the rest.
The pitch ratio follows from distance: with the default display, lens and sensor pitches it is
about 405 / distance_mm, so 1.0 at 405 mm, where moiré bands are widest.
"""

from __future__ import annotations

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
