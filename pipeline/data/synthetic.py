"""Render a synthetic (moiré, clean) dataset: which source each pair uses, and one pair at a time.

Every pair's randomness comes from (seed, stage, pair index) alone, so any sharding over any number
of workers produces the same bytes. A run renders into a resumable work folder beside the output,
named by a fingerprint of everything the bytes depend on; each finished shard leaves a marker there,
so a killed run started again renders only the shards it had not finished.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from pipeline.allocator import reuse_freed_memory
from pipeline.config import SynthesizeParams
from pipeline.data.manifest import write_manifest
from pipeline.errors import InputDataError
from pipeline.faults import kill_point
from pipeline.io import (
    atomic_path, check_free_space, check_replaceable_dir, partial_beside, partials_beside, remove_stale_temps,
    replace_dir, sole_writer, temp_beside, write_json, write_png,
)
from pipeline.lifetime import die_with_parent
from pipeline.moire.layer_bank import shared_layer_bank
from pipeline.moire.simulate import sample_capture_params, simulate_capture
from pipeline.progress import ProgressReporter
from pipeline.provenance import code_digest
from pipeline.sources import SkippedSource, SourceSpec, collect_sources, load_source

log = logging.getLogger(__name__)

SYNTHESIZE_STREAM = 0x53594E54  # "SYNT": keeps this stage's random streams apart from others'
MOIRE_DIR, CLEAN_DIR = "moire", "clean"
SHARDS_PER_WORKER = 4  # several shards per worker keep every worker busy when shards differ in cost


def pair_generator(seed: int, index: int) -> np.random.Generator:
    """The random stream of pair `index`, independent of worker order."""
    return np.random.default_rng([seed, SYNTHESIZE_STREAM, index])


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch and OpenCV on one thread: one process per core scales better, and bytes never depend on it."""
    previous, previous_opencv = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
        cv2.setNumThreads(previous_opencv)


def pair_filename(index: int) -> str:
    """File name shared by a pair's moiré and clean images."""
    return f"{index:06d}.png"


def render_pair(
    index: int, spec: SourceSpec, cfg: SynthesizeParams, seed: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Simulate pair `index` from `spec`; return (moiré, clean, manifest record)."""
    reuse_freed_memory()  # whichever process renders: pool worker, flow task, Dask worker, bench
    rng = pair_generator(seed, index)
    source = load_source(spec, seed)
    capture = sample_capture_params(cfg, source.shape[:2], rng)
    bank = shared_layer_bank(cfg, seed)
    if bank is not None:
        capture = bank.assign(capture, source.shape[:2], rng)
    with single_threaded():
        moire, clean = simulate_capture(source, capture, cfg.size, cfg.optics.supersample, bank)
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


def sources_without_pairs(n_pairs: int, specs: list[SourceSpec]) -> list[SourceSpec]:
    """The sources no pair shows: with fewer pairs than sources, `source_for_pair` passes some over."""
    shown = {source_for_pair(index, n_pairs, len(specs)) for index in range(n_pairs)}
    return [spec for position, spec in enumerate(specs) if position not in shown]


def warn_unshown_sources(n_pairs: int, specs: list[SourceSpec]) -> None:
    """Say which usable sources get no pair, if any: a few named, the user's photos first."""
    unshown = sources_without_pairs(n_pairs, specs)
    if unshown:
        named = sorted(unshown, key=lambda spec: spec.kind != "folder")[:5]
        more = f" and {len(unshown) - len(named)} more" if len(unshown) > len(named) else ""
        log.warning("synthesize.n_pairs %d is below the %d usable sources: %d get no pair (%s%s); raise n_pairs to %d "
                    "or more to use each one", n_pairs, len(specs), len(unshown),
                    ", ".join(spec.path or spec.source_id for spec in named), more, len(specs))


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
    return split_into_shards(list(range(n_pairs)), n_shards)


def split_into_shards(indices: list[int], n_shards: int) -> list[list[int]]:
    """Split `indices` (in order) into at most n_shards consecutive, non-empty shards."""
    n_shards = max(1, min(n_shards, len(indices)))
    bounds = np.linspace(0, len(indices), n_shards + 1).round().astype(int)
    return [indices[bounds[i]:bounds[i + 1]] for i in range(n_shards)]


# Bytes per pixel of a rendered PNG, an upper bound: the default preset's measured 1.5 at 128² and 1.3 at 512²
# (zlib level 1, pipeline.io; noise and JPEG blocks compress poorly); checked against free space before rendering.
PNG_BYTES_PER_PIXEL = 3.0


def estimated_bytes(cfg: SynthesizeParams, n_pairs: int | None = None) -> int:
    """What `n_pairs` pairs (all of cfg.n_pairs by default) take on disk, about: two PNGs and a manifest row each."""
    n_pairs = cfg.n_pairs if n_pairs is None else n_pairs
    return int(n_pairs * (2 * PNG_BYTES_PER_PIXEL * cfg.size ** 2 + 1024))


SET_DIR, SHARDS_DIR = "set", "shards"  # inside a work folder: the set being rendered, and finished-shard markers
# Shards of at most this many pairs (about 10 s each at 512²): a kill loses little, and the bar moves often.
SYNTHETIC_SET_ENTRIES = {"moire", "clean", "manifest.parquet", "summary.json"}  # what a published set holds

MAX_SHARD_PAIRS = 32
# The code and libraries that decide a pair's bytes: after an edit to them, no earlier shard is reused.
RENDER_CODE = ("pipeline/__init__.py", "pipeline/moire", "pipeline/sources", "pipeline/data/synthetic.py")


def renderer_digest() -> str:
    """Digest of the rendering code (RENDER_CODE), of the numpy, torch, Pillow and OpenCV versions (OpenCV
    blurs the frames and carries the libjpeg that compresses them), of the kernels OpenCV's IPP runs (their last
    bits reach the bytes: pipeline/__init__.py) and of MKL's reproducibility branch (which the render no longer
    depends on, pipeline.moire.portable; kept in, a resumed set keeps to one all the same)."""
    import PIL

    versions = (f"{np.__version__} {torch.__version__} {PIL.__version__} {cv2.__version__} {ipp_kernels()} "
                f"{os.environ.get('MKL_CBWR')}")
    return code_digest(RENDER_CODE, versions)


def ipp_kernels() -> str:
    """Which of Intel IPP's kernels OpenCV runs here (e.g. `AVX2 (l9)`), or that it runs none."""
    return cv2.ipp.getIppVersion() if cv2.ipp.useIPP() else "no IPP"


@functools.cache
def loaded_renderer_digest() -> str:
    """`renderer_digest()` of the code this process runs: taken once, as it was loaded (the modules are imported
    with this one), since a long-lived Dask worker keeps running what it imported after the files change."""
    return renderer_digest()


def check_renderer(expected: str) -> None:
    """Refuse to render with other code or library versions than the run's `renderer_digest()` (a Dask worker
    started from another checkout or environment, or before a checkout changed): the set's fingerprint would record
    what did not run."""
    if loaded_renderer_digest() != expected:
        import socket

        raise InputDataError(f"a worker on {socket.gethostname()} renders with other code or library versions than "
                             f"this run (its pipeline: {Path(__file__).parents[1]}): start the Dask workers from the "
                             "same checkout and environment as the stage, after any change to it")


def source_stamp(spec: SourceSpec) -> list:
    """A source as the fingerprint sees it: its spec, and the size and mtime of its file (an edited photo differs)."""
    try:
        stat = os.stat(spec.path) if spec.path else None
    except OSError:
        stat = None
    return [asdict(spec), stat.st_size if stat else 0, stat.st_mtime_ns if stat else 0]


def synthesis_fingerprint(cfg: SynthesizeParams, seed: int, specs: list[SourceSpec]) -> str:
    """Everything the rendered bytes depend on: the params (not how many workers run them), seed, sources, code."""
    settings = cfg.model_dump(mode="json", exclude={"workers", "dask_address"})
    sources = [source_stamp(spec) for spec in specs]
    return hashlib.sha256(json.dumps([settings, seed, sources, renderer_digest()], sort_keys=True).encode()).hexdigest()


def work_folder(out_dir: Path, fingerprint: str) -> Path:
    """The resumable work folder of a run writing `out_dir` (hidden, beside it)."""
    return partial_beside(out_dir, fingerprint)


def discard_stale_work(out_dir: Path, keep: Path) -> None:
    """Remove work folders beside `out_dir` other than `keep`: their params, seed, sources or code differ."""
    for folder in partials_beside(out_dir):
        if folder != keep:
            log.info("discarding %s: rendered with other params, seed, sources or code", folder)
            shutil.rmtree(folder, ignore_errors=True)


def shard_marker(work: Path, indices: list[int]) -> Path:
    """Where a finished shard's records are kept."""
    return work / SHARDS_DIR / f"{indices[0]:08d}-{indices[-1]:08d}.json"


def render_shard_resumably(
    indices: list[int], specs: list[SourceSpec], cfg: SynthesizeParams, seed: int, work: Path
) -> list[dict]:
    """Render a shard into work/set, then mark it finished with its records; return them."""
    records = render_shard(indices, specs, cfg, seed, Path(work) / SET_DIR)
    with atomic_path(shard_marker(Path(work), indices)) as tmp:
        tmp.write_text(json.dumps(records))  # NaN stays NaN: the manifest is built from these records
    return records


def finished_records(work: Path) -> dict[int, dict]:
    """Manifest records, by pair index, of the pairs in finished shards whose images are in place."""
    records: dict[int, dict] = {}
    for marker in sorted((work / SHARDS_DIR).glob("*.json")):
        shard = json.loads(marker.read_text())
        if all((work / SET_DIR / r[key]).is_file() for r in shard for key in ("moire_path", "clean_path")):
            records.update((r["pair_id"], r) for r in shard)
    return records


ShardRunner = Callable[[list[list[int]], list[SourceSpec], Path], Iterable[list[dict]]]
"""Renders shards of pair indices into a work folder (render_shard_resumably on each); yields each
shard's records as it finishes, in any order."""


def local_shard_runner(cfg: SynthesizeParams, seed: int, workers: int) -> ShardRunner:
    """Render shards in this process (one worker) or in a pool of `workers` processes."""

    def run(shards: list[list[int]], specs: list[SourceSpec], work: Path) -> Iterator[list[dict]]:
        if workers == 1:
            for shard in shards:
                yield render_shard_resumably(shard, specs, cfg, seed, work)
            return
        pool = ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),))
        try:
            jobs = [pool.submit(render_shard_resumably, shard, specs, cfg, seed, work) for shard in shards]
            for job in as_completed(jobs):
                yield job.result()
        finally:  # on an error, shards not started yet are dropped rather than rendered first
            pool.shutdown(wait=True, cancel_futures=True)

    return run


def publish_set(work: Path, out_dir: Path, fingerprint: str) -> None:
    """Put the work folder's finished set in place of `out_dir`, whole, mark it published, remove the work folder.

    The set leaves the work folder first, so its shard markers never vouch for images that are not theirs;
    it replaces `out_dir` in one step (pipeline.io.replace_dir).
    """
    incoming = temp_beside(out_dir, "incoming")
    os.replace(work / SET_DIR, incoming)
    kill_point(f"before:{out_dir.name}")
    replace_dir(incoming, out_dir)
    kill_point(f"after:{out_dir.name}")
    with atomic_path(published_mark(out_dir)) as tmp:
        tmp.write_text(json.dumps({"fingerprint": fingerprint,
                                   "manifest_sha256": _sha256(out_dir / "manifest.parquet")}))
    shutil.rmtree(work, ignore_errors=True)


def check_replaceable_set(out_dir: Path, overwrite: bool, option: str = "--out",
                          overwrite_option: str = "--overwrite", writer: str = "demoire synthesize") -> None:
    """Refuse, before any work, an --out that cannot be one, an existing one unless `overwrite`, and even then one
    that is not a synthetic set: it is replaced whole, so every file in it must be a pair its manifest names (a real
    dataset in the generic layout has moire/ and clean/ too)."""
    check_replaceable_dir(out_dir, overwrite, SYNTHETIC_SET_ENTRIES, option, overwrite_option, writer=writer)
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    foreign = _files_no_manifest_names(out_dir)
    if foreign:
        raise InputDataError(f"{out_dir} holds more than a synthetic set ({', '.join(foreign[:3])}); "
                             f"{overwrite_option} replaces only folders {writer} wrote")


def _files_no_manifest_names(out_dir: Path) -> list[str]:
    """The files under `out_dir`'s moire/ and clean/ that its manifest names as no pair's (all when it has none)."""
    try:
        manifest = pd.read_parquet(out_dir / "manifest.parquet", columns=["moire_path", "clean_path"])
        named = set(manifest["moire_path"]) | set(manifest["clean_path"])
    except Exception:  # absent, unreadable or another kind of table: no file is a synthetic set's
        named = set()
    found = (path.relative_to(out_dir) for folder in (MOIRE_DIR, CLEAN_DIR)
             for path in sorted((out_dir / folder).rglob("*")) if not path.is_dir())
    return [name.as_posix() for name in found if name.as_posix() not in named and not _os_clutter(name)]


def _os_clutter(path: Path) -> bool:
    """What a file browser or a notebook leaves in any folder it shows (.DS_Store, Thumbs.db, .ipynb_checkpoints/)."""
    return any(part.startswith(".") for part in path.parts) or path.name.lower() in {"thumbs.db", "desktop.ini"}


def published_mark(out_dir: Path) -> Path:
    """Beside a published set (`.NAME.published`): its fingerprint and manifest digest. A run stopped after
    publishing (in the synthesis report, say) and started again finds there that its set is already in place."""
    return out_dir.parent / f".{out_dir.name}.published"


def published_summary(out_dir: Path, fingerprint: str) -> dict | None:
    """The summary of the set in `out_dir` if a run with this fingerprint published it, unchanged since; else None."""
    try:
        mark = json.loads(published_mark(out_dir).read_text())
        if mark == {"fingerprint": fingerprint, "manifest_sha256": _sha256(out_dir / "manifest.parquet")}:
            return json.loads((out_dir / "summary.json").read_text())
    except (OSError, ValueError):  # no mark, no set, or either unreadable: render
        pass
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def synthesize_dataset(cfg: SynthesizeParams, seed: int, out_dir: Path, run_shards: ShardRunner) -> dict:
    """Render cfg.n_pairs pairs into out_dir: moire/, clean/ (matching names), manifest.parquet.

    `out_dir` appears only once every pair is written. A run killed before then, started again with
    the same params, seed, sources and code, renders only the shards it had not finished; the bytes
    are those of an uninterrupted run; a second run into `out_dir` while one is running stops at once
    (InputDataError). Returns counts of pairs and of usable and skipped sources;
    the caller chooses how shards run (processes here, Prefect tasks in the flow).
    """
    out_dir = Path(out_dir)
    specs, skipped = collect_sources(cfg.sources.bundled, cfg.sources.procedural, cfg.sources.folders, cfg.sources.screen_kinds)
    if not specs:
        raise InputDataError("no usable source images: enable bundled or procedural sources, or add folders")
    warn_unshown_sources(cfg.n_pairs, specs)
    # Two runs into one folder would each discard the other's work folder (different params) or render the
    # same shards twice (same params): the second stops at once.
    with sole_writer(out_dir, "synthesize run"):
        return render_and_publish(cfg, seed, out_dir, run_shards, specs, skipped)


def render_and_publish(cfg: SynthesizeParams, seed: int, out_dir: Path, run_shards: ShardRunner,
                       specs: list[SourceSpec], skipped: list[SkippedSource]) -> dict:
    """synthesize_dataset's work once it holds the output folder's lock."""
    fingerprint = synthesis_fingerprint(cfg, seed, specs)
    work = work_folder(out_dir, fingerprint)
    discard_stale_work(out_dir, keep=work)
    remove_stale_temps(out_dir.parent, out_dir.name)  # temp folders of killed runs
    published = published_summary(out_dir, fingerprint)
    if published is not None:
        log.info("%s already holds this set (a run was stopped after publishing it): nothing to render", out_dir)
        return published
    done = finished_records(work)
    remaining = [index for index in range(cfg.n_pairs) if index not in done]
    check_free_space(out_dir, estimated_bytes(cfg, len(remaining)), f"synthesizing {len(remaining):,} pairs of {cfg.size}²",
                     "lower synthesize.n_pairs or size, or free some space")
    if done:
        log.info("resuming from %s: %d of %d pairs already rendered", work, len(done), cfg.n_pairs)
    n_shards = max(cfg.workers * SHARDS_PER_WORKER, math.ceil(len(remaining) / MAX_SHARD_PAIRS))
    shards = split_into_shards(remaining, n_shards) if remaining else []
    with ProgressReporter(f"synthesize {cfg.size}²", cfg.n_pairs, "pairs", start=len(done)) as progress:
        for records in run_shards(shards, specs, work):
            progress.advance(len(records))
            kill_point("synthesize.shard_done")  # fault-injection tests: killed with finished shards on disk
    records = list(finished_records(work).values())
    if len(records) != cfg.n_pairs:
        raise InputDataError(
            f"{cfg.n_pairs - len(records)} of {cfg.n_pairs} rendered pairs are missing from {work}; workers on "
            "other machines (Dask) must write to a filesystem shared with this one")
    staging = work / SET_DIR
    for leftover in staging.rglob(".*.tmp"):  # every pair is finished: these are temp files of killed writers
        leftover.unlink()
    write_manifest(records, staging / "manifest.parquet")
    summary = {"pairs": len(records), "sources_used": len({record["source_id"] for record in records}),
               "sources_skipped": len(skipped),
               "skipped": [{"path": s.path, "reason": s.reason} for s in skipped]}
    write_json(staging / "summary.json", summary)
    publish_set(work, out_dir, fingerprint)
    return summary


loaded_renderer_digest()  # as this module and the renderer it imported are loaded, not as their files change later
