"""Clean source images: bundled sample photos, procedural screen content and user folders."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline.io import read_rgb, readable_text
from pipeline.sources.bundled import bundled_image_paths
from pipeline.sources.folders import scan_folder
from pipeline.sources.procedural import SCREEN_KINDS, render_screen_content

log = logging.getLogger(__name__)


SOURCE_ID_PREFIXES = ("bundled/", "procedural/", "folder/")  # the synthetic sources' ids, not an imported pair's


@dataclass(frozen=True)
class SourceSpec:
    """Where one clean image comes from; `source_id` is unique and stable across runs."""

    source_id: str
    kind: str  # "bundled", "procedural" or "folder"
    path: str = ""  # file for bundled/folder sources
    screen_kind: str = ""  # procedural content type
    index: int = 0  # procedural index, part of its seed


@dataclass(frozen=True)
class SkippedSource:
    """A source file that could not be used, and why."""

    path: str
    reason: str


def collect_sources(
    bundled: bool, procedural: int, folders: list[Path], screen_kinds: Sequence[str] = SCREEN_KINDS
) -> tuple[list[SourceSpec], list[SkippedSource]]:
    """List every usable source image; procedural screens cycle through `screen_kinds`.

    Unreadable folder files are skipped and reported.
    """
    specs: list[SourceSpec] = []
    if bundled:
        specs += [
            SourceSpec(source_id=f"bundled/{name}", kind="bundled", path=str(path))
            for name, path in bundled_image_paths()
        ]
    specs += [
        SourceSpec(
            source_id=f"procedural/{i:05d}-{screen_kinds[i % len(screen_kinds)]}",
            kind="procedural",
            screen_kind=screen_kinds[i % len(screen_kinds)],
            index=i,
        )
        for i in range(procedural)
    ]
    skipped: list[SkippedSource] = []
    labels: set[str] = set()
    for folder in folders:
        usable, bad = scan_folder(folder)
        # the path within the folder (a/x.png and b/x.png are two sources), and a second folder of the same name
        # (/one/photos, /two/photos) numbered: ids are unique, and a flat folder's stay its file names
        label, number = Path(folder).name, 1
        while label in labels:
            number += 1
            label = f"{Path(folder).name}-{number}"
        labels.add(label)
        specs += [
            SourceSpec(source_id=f"folder/{label}/{p.relative_to(folder).as_posix()}", kind="folder", path=str(p))
            for p in usable
        ]
        skipped += [SkippedSource(path=readable_text(str(p)), reason=reason) for p, reason in bad]
    for item in skipped:
        log.warning("skipped source %s: %s", item.path, item.reason)
    return specs, skipped


@lru_cache(maxsize=64)
def load_source(spec: SourceSpec, seed: int) -> np.ndarray:
    """The clean RGB uint8 image for `spec`; procedural content is rendered from (seed, index)."""
    if spec.kind == "procedural":
        rng = np.random.default_rng([seed, 0x50524F43, spec.index])  # "PROC"
        return render_screen_content(spec.screen_kind, rng)
    return read_rgb(Path(spec.path))
