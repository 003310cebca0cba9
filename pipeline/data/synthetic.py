"""Render a synthetic (moiré, clean) dataset: which source each pair uses, and one pair at a time.

Every pair's randomness comes from (seed, stage, pair index) alone, so any sharding over any number
of workers produces the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from pipeline.config import SynthesizeParams
from pipeline.data.manifest import write_manifest
from pipeline.io import atomic_dir, check_free_space, write_json, write_png
from pipeline.moire.simulate import sample_capture_params, simulate_capture
from pipeline.errors import InputDataError
from pipeline.sources import SourceSpec, collect_sources, load_source

SYNTHESIZE_STREAM = 0x53594E54  # "SYNT": keeps this stage's random streams apart from others'
MOIRE_DIR, CLEAN_DIR = "moire", "clean"
SHARDS_PER_WORKER = 4  # several shards per worker keep every worker busy when shards differ in cost


def pair_generator(seed: int, index: int) -> np.random.Generator:
    """The random stream of pair `index`, independent of worker order."""
    return np.random.default_rng([seed, SYNTHESIZE_STREAM, index])


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one thread: one process per core scales better, and bytes never depend on it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
    with single_threaded():
        moire, clean = simulate_capture(source, capture, cfg.size, cfg.optics.supersample)
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


def source_for_pair(index: int, n_pairs: int, n_sources: int) -> int:
    """Which source pair `index` shows: consecutive pairs share a source, so a shard decodes each once."""
    return index * n_sources // n_pairs


def render_shard(
    indices: list[int], specs: list[SourceSpec], cfg: SynthesizeParams, seed: int, out_dir: Path
) -> list[dict]:
    """Render and write the pairs in `indices` under out_dir; return their manifest records."""
    records = []
    for index in indices:
        moire, clean, record = render_pair(index, specs[source_for_pair(index, cfg.n_pairs, len(specs))], cfg, seed)
        write_png(Path(out_dir) / record["moire_path"], moire)
        write_png(Path(out_dir) / record["clean_path"], clean)
        records.append(record)
    return records


def shard_indices(n_pairs: int, n_shards: int) -> list[list[int]]:
    """Split pair indices 0..n-1 into at most n_shards contiguous, non-empty shards."""
    n_shards = max(1, min(n_shards, n_pairs))
    bounds = np.linspace(0, n_pairs, n_shards + 1).round().astype(int)
    return [list(range(bounds[i], bounds[i + 1])) for i in range(n_shards)]


# Bytes per pixel of a rendered PNG, measured on the default preset at 128² (about 2.3, noise and JPEG
# blocks compress poorly), rounded up; the estimate is checked against free space before rendering.
PNG_BYTES_PER_PIXEL = 3.0


def estimated_bytes(cfg: SynthesizeParams) -> int:
    """What a synthetic set takes on disk, about: two PNGs per pair, and a manifest row each."""
    return int(cfg.n_pairs * (2 * PNG_BYTES_PER_PIXEL * cfg.size ** 2 + 1024))


ShardRunner = Callable[[list[list[int]], list[SourceSpec], Path], list[list[dict]]]
"""Renders shards of pair indices into a staging folder (render_shard on each); returns their records."""


def local_shard_runner(cfg: SynthesizeParams, seed: int, workers: int) -> ShardRunner:
    """Render shards in this process (one worker) or in a pool of `workers` processes."""

    def run(shards: list[list[int]], specs: list[SourceSpec], staging: Path) -> list[list[dict]]:
        if workers == 1:
            return [render_shard(shard, specs, cfg, seed, staging) for shard in shards]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            jobs = [pool.submit(render_shard, shard, specs, cfg, seed, staging) for shard in shards]
            return [job.result() for job in jobs]

    return run


def synthesize_dataset(cfg: SynthesizeParams, seed: int, out_dir: Path, run_shards: ShardRunner) -> dict:
    """Render cfg.n_pairs pairs into out_dir: moire/, clean/ (matching names), manifest.parquet.

    `out_dir` appears only once every pair is written. Returns counts of pairs and of usable and
    skipped sources; the caller chooses how shards run (processes here, Prefect tasks in the flow).
    """
    check_free_space(out_dir, estimated_bytes(cfg), f"synthesizing {cfg.n_pairs:,} pairs of {cfg.size}²",
                     "lower synthesize.n_pairs or size, or free some space")
    specs, skipped = collect_sources(cfg.sources.bundled, cfg.sources.procedural, cfg.sources.folders, cfg.sources.screen_kinds)
    if not specs:
        raise InputDataError("no usable source images: enable bundled or procedural sources, or add folders")
    shards = shard_indices(cfg.n_pairs, cfg.workers * SHARDS_PER_WORKER)
    with atomic_dir(out_dir, whole=True) as staging:
        records = [record for shard in run_shards(shards, specs, staging) for record in shard]
        missing = [r["moire_path"] for r in records if not (staging / r["moire_path"]).is_file()]
        if missing:
            raise InputDataError(
                f"{len(missing)} rendered pairs are missing from {staging} (first: {missing[0]}); workers on "
                "other machines (Dask) must write to a filesystem shared with this one")
        write_manifest(records, staging / "manifest.parquet")
        summary = {"pairs": len(records), "sources_used": len(specs), "sources_skipped": len(skipped),
                   "skipped": [{"path": s.path, "reason": s.reason} for s in skipped]}
        write_json(staging / "summary.json", summary)
    return summary
