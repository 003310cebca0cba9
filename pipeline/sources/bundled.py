"""Sample photos that ship inside installed packages (scikit-image, matplotlib): no download."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import skimage.data

_SKIMAGE_FILES = [
    "astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
    "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "color.png", "gravel.png", "brick.png",
    "grass.png", "camera.png", "text.png", "page.png", "moon.png", "coins.png", "horse.png",
    "logo.png", "clock_motion.png",
]
_MATPLOTLIB_FILES = ["grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"]


def bundled_image_paths() -> list[tuple[str, Path]]:
    """(name, path) of every bundled sample photo present in this installation, in a fixed order."""
    skimage_dir = Path(skimage.data.__file__).parent
    mpl_dir = Path(matplotlib.get_data_path()) / "sample_data"
    candidates = [(f"skimage-{Path(f).stem}", skimage_dir / f) for f in _SKIMAGE_FILES]
    candidates += [(f"matplotlib-{Path(f).stem}", mpl_dir / f) for f in _MATPLOTLIB_FILES]
    return [(name, path) for name, path in candidates if path.is_file()]
