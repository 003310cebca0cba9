"""Stage `preprocess`: validate every pair, split train/val/test by source image, add real pairs, index them."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows._entry import run_stage
from flows.dvc_ops import warn_undeclared_folders
from pipeline.config import ImportedDataset, Params
from pipeline.data.imported import ImportedPairs, import_dataset_pairs, next_pair_id
from pipeline.data.manifest import read_manifest, validate_pairs
from pipeline.data.pairs_index import index_pairs
from pipeline.data.splits import SPLITS
from pipeline.io import write_json


@task(name="validate-pairs", retries=1)
def validate_task(data: Path):
    """Decode every pair listed in the manifest; return (usable, rejected) frames."""
    return validate_pairs(read_manifest(data / "manifest.parquet"), data)


@task(name="import-datasets")
def import_task(datasets: list[ImportedDataset], first_pair_id: int, train_patch: int) -> ImportedPairs:
    """Find and validate the pairs of the real datasets listed in preprocess.datasets."""
    return import_dataset_pairs(datasets, first_pair_id, train_patch)


@flow(name="preprocess")
def preprocess_flow(params: Params, data: Path, out: Path, summary_path: Path) -> dict:
    """Write `out` (pairs.parquet with a split column) and a summary of counts."""
    cfg = params.preprocess
    # Imported datasets first: a wrong dataset path fails before any synthetic image is decoded.
    imported = import_task(cfg.datasets, next_pair_id(read_manifest(data / "manifest.parquet")),
                           params.train.patch_size)
    index = index_pairs(params, validate_task(data) if cfg.synthetic else None, imported)
    index.write(out)
    summary = index.summary()
    write_json(summary_path, summary)
    rows = "".join(f"| {s} | {summary['pairs'][s]} | {summary['sources'][s]} |\n" for s in SPLITS)
    create_markdown_artifact(
        key="preprocess-summary",
        markdown=(f"# Preprocess\n\n| split | pairs | sources |\n|---|---|---|\n{rows}\n"
                  f"Rejected pairs: {summary['rejected_pairs']}\n\n"
                  f"Imported real pairs: {summary['imported_pairs']} "
                  f"(unpaired files skipped: {summary['unpaired_files']})\n"),
    )
    return summary


def main() -> None:
    """`python -m flows.preprocess --data data/synthesize --out data/preprocess/pairs.parquet --summary …`."""

    def run(params: Params, args) -> dict:
        warn_undeclared_folders("preprocess", "preprocess.datasets",
                                [dataset.path for dataset in params.preprocess.datasets], "pairs")
        return preprocess_flow(params, args.data, args.out, args.summary)

    run_stage(__doc__, ["data", "out", "summary"], run)


if __name__ == "__main__":
    main()
