"""Stage `synthesize`: clean sources → (moiré, clean) pairs + manifest, fanned out over processes."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from prefect import flow, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from flows._entry import run_stage
from pipeline.config import Params
from pipeline.data.manifest import write_manifest
from pipeline.data.synthetic import render_shard, shard_indices
from pipeline.io import atomic_dir, write_json
from pipeline.sources import SourceSpec, collect_sources

SHARDS_PER_WORKER = 4  # several shards per process keep the pool busy when shards differ in cost


@task(name="render-shard", retries=2, retry_delay_seconds=[1, 5])
def render_shard_task(indices: list[int], specs: list[SourceSpec], params: Params, out_dir: Path) -> list[dict]:
    """Render one shard of pairs into the staging folder."""
    return render_shard(indices, specs, params.synthesize, params.seed, out_dir)


@flow(name="synthesize")
def synthesize_flow(params: Params, out: Path) -> dict:
    """Render params.synthesize.n_pairs pairs into `out` (replaced only when all succeed)."""
    cfg = params.synthesize
    start = time.perf_counter()
    specs, skipped = collect_sources(cfg.sources.bundled, cfg.sources.procedural, cfg.sources.folders)
    if not specs:
        raise ValueError("no usable source images: enable synthesize.sources.bundled or add sources")
    with atomic_dir(out) as staging:
        shards = shard_indices(cfg.n_pairs, cfg.workers * SHARDS_PER_WORKER)
        futures = render_shard_task.map(shards, unmapped(specs), unmapped(params), unmapped(staging))
        records = [record for future in futures for record in future.result()]
        write_manifest(records, staging / "manifest.parquet")
        summary = {
            "pairs": len(records),
            "sources_used": len(specs),
            "sources_skipped": len(skipped),
            "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
        }
        write_json(staging / "summary.json", summary)
    elapsed = time.perf_counter() - start
    create_markdown_artifact(
        key="synthesize-summary",
        markdown=(f"# Synthesis\n\n| pairs | sources | skipped sources | size | seconds |\n|---|---|---|---|---|\n"
                  f"| {len(records)} | {len(specs)} | {len(skipped)} | {cfg.size}² | {elapsed:.1f} |\n"),
    )
    return summary


def main() -> None:
    """`python -m flows.synthesize --out data/synthesize`."""

    def run(params: Params, args: argparse.Namespace) -> None:
        workers = params.synthesize.workers
        runner = ProcessPoolTaskRunner(max_workers=workers) if workers > 1 else ThreadPoolTaskRunner(max_workers=1)
        synthesize_flow.with_options(task_runner=runner)(params=params, out=args.out)

    run_stage(__doc__, ["out"], run)


if __name__ == "__main__":
    main()
