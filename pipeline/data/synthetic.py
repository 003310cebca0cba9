"""Render a synthetic (moiré, clean) dataset: which source each pair uses, and one pair at a time.

Every pair's randomness comes from (seed, stage, pair index) alone, so any sharding over any number
of workers produces the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import SynthesizeParams
from pipeline.io import write_png
from pipeline.moire.simulate import sample_capture_params, simulate_capture
from pipeline.sources import SourceSpec, load_source

SYNTHESIZE_STREAM = 0x53594E54  # "SYNT": keeps this stage's random streams apart from others'
MOIRE_DIR, CLEAN_DIR = "moire", "clean"


def pair_generator(seed: int, index: int) -> np.random.Generator:
    """The random stream of pair `index`, independent of worker order."""
    return np.random.default_rng([seed, SYNTHESIZE_STREAM, index])


def pair_filename(index: int) -> str:
    """File name shared by a pair's moiré and clean images."""
    return f"{index:06d}.png"


def render_pair(
    index: int, spec: SourceSpec, cfg: SynthesizeParams, seed: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Simulate pair `index` from `spec`; return (moiré, clean, manifest record)."""
    rng = pair_generator(seed, index)
    source = load_source(spec, seed)
    capture = sample_capture_params(cfg, source.shape[:2], rng)
    moire, clean = simulate_capture(source, capture, cfg.size, cfg.optics.supersample, rng)
    name = pair_filename(index)
    record = {
        "pair_id": index,
        "source_id": spec.source_id,
        "source_kind": spec.kind,
        "moire_path": f"{MOIRE_DIR}/{name}",
        "clean_path": f"{CLEAN_DIR}/{name}",
        "height": cfg.size,
        "width": cfg.size,
        **capture.as_record(),
    }
    return moire, clean, record


def render_shard(
    indices: list[int], specs: list[SourceSpec], cfg: SynthesizeParams, seed: int, out_dir: Path
) -> list[dict]:
    """Render and write the pairs in `indices` under out_dir; return their manifest records."""
    records = []
    for index in indices:
        moire, clean, record = render_pair(index, specs[index % len(specs)], cfg, seed)
        write_png(Path(out_dir) / record["moire_path"], moire)
        write_png(Path(out_dir) / record["clean_path"], clean)
        records.append(record)
    return records


def shard_indices(n_pairs: int, n_shards: int) -> list[list[int]]:
    """Split pair indices 0..n-1 into at most n_shards contiguous, non-empty shards."""
    n_shards = max(1, min(n_shards, n_pairs))
    bounds = np.linspace(0, n_pairs, n_shards + 1).round().astype(int)
    return [list(range(bounds[i], bounds[i + 1])) for i in range(n_shards)]
