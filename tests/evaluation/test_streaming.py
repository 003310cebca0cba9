"""Evaluation streams pairs: one decoded at a time, rows written as scored, only the grid's pairs kept."""

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import InferParams
from pipeline.data.dataset import to_image, to_tensor
from pipeline.data.paired_folder import find_paired_folder
from pipeline.errors import InputDataError
from pipeline.evaluation.evaluate import (CSV_FLOAT_FORMAT, evaluate_found_pairs, image_scores, indexed_pairs,
                                          score_named_pairs, summarize)
from pipeline.evaluation.gate import GateSet, score_on_gate
from pipeline.evaluation.grid import CELL, before_after_grid
from pipeline.evaluation.real_sets import served_restorer
from pipeline.io import atomic_path, read_rgb, write_png
from pipeline.models import ModelSpec, build_model
from tests.evaluation.test_real_sets import real_looking_pairs

TILING = InferParams(tile_size=32, tile_overlap=8)  # the 40x56 pairs are restored in tiles
NAMES = ["a.png", "b.png", "c.png", "d.png"]


@pytest.fixture
def pairs(tmp_path, rng):
    return real_looking_pairs(tmp_path / "pairs", rng, NAMES)


@pytest.fixture
def restore():
    return served_restorer(build_model(ModelSpec("unet", 8, 2), seed=0).eval(), torch.device("cpu"), TILING)


def in_memory_scores(restore, root, names):
    """The per-image table as evaluation computed it before streaming: every pair loaded, then one row each."""
    loaded = [(read_rgb(root / "moire" / n), read_rgb(root / "clean" / n)) for n in names]
    rows = []
    for name, (moire, clean) in zip(names, loaded):
        x, y = to_tensor(moire), to_tensor(clean)
        rows.append({"image": name, **image_scores(restore(x), y),
                     **{f"identity_{k}": v for k, v in image_scores(x, y).items()}})
    return pd.DataFrame(rows)


def test_streamed_scores_and_csv_equal_the_in_memory_path(pairs, restore, tmp_path):
    csv = tmp_path / "per_image.csv"
    scores = evaluate_found_pairs(restore, find_paired_folder(pairs), pairs, csv, progress="off")
    expected = in_memory_scores(restore, pairs, NAMES)
    pd.testing.assert_frame_equal(scores.per_image, expected, check_exact=True)
    assert csv.read_text() == expected.to_csv(index=False, float_format=CSV_FLOAT_FORMAT)
    assert scores.summary == {**summarize(expected), "skipped": 0}
    assert scores.summary["count"] == 4 and np.isfinite(scores.summary["psnr"])


def test_pairs_are_decoded_one_at_a_time_and_each_row_is_on_disk_before_the_next_restore(pairs, tmp_path):
    csv = tmp_path / "per_image.csv"
    decoded, seen = [], []

    def lazily():
        for name in NAMES:
            decoded.append(name)
            yield name, (read_rgb(pairs / "moire" / name), read_rgb(pairs / "clean" / name))

    def restore(x):
        seen.append((len(decoded), len(pd.read_csv(csv)) if csv.stat().st_size else 0))
        return x

    score_named_pairs(restore, lazily(), csv)
    # at the k-th restore, k pairs have been decoded and the k - 1 before it are already rows in the file
    assert seen == [(1, 0), (2, 1), (3, 2), (4, 3)]


def test_only_the_grid_pairs_are_kept_as_thumbnails_that_draw_the_same_grid(pairs, restore):
    _, shown = score_named_pairs(restore, ((n, (read_rgb(pairs / "moire" / n), read_rgb(pairs / "clean" / n)))
                                           for n in NAMES), grid_count=2)
    assert len(shown) == 2 and all(image.shape == (CELL, CELL, 3) for row in shown for image in row)
    full = [(read_rgb(pairs / "moire" / n), to_image(restore(to_tensor(read_rgb(pairs / "moire" / n)))),
             read_rgb(pairs / "clean" / n)) for n in NAMES[:2]]
    assert np.array_equal(before_after_grid(shown), before_after_grid(full))


def test_progress_counts_every_selected_pair_and_unreadable_ones_are_skipped(pairs, restore, caplog):
    (pairs / "clean" / "b.png").write_bytes(b"not a png")
    write_png(pairs / "moire" / "e.png", np.zeros((8, 8, 3), np.uint8))  # below the SSIM window
    write_png(pairs / "clean" / "e.png", np.zeros((8, 8, 3), np.uint8))
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    scores = evaluate_found_pairs(restore, find_paired_folder(pairs), pairs, description="scoring pairs", progress="log")
    assert list(scores.per_image.image) == ["a.png", "c.png", "d.png"] and scores.summary["skipped"] == 2
    assert [name for name, _ in scores.skipped] == ["b.png", "e.png"]
    assert caplog.records[-1].getMessage().startswith("scoring pairs: 5/5 pairs (100%)")


def test_a_failed_run_leaves_no_csv_and_none_readable_is_one_error(pairs, tmp_path):
    out, calls = tmp_path / "per_image.csv", []

    def breaks_on_the_third(x):
        calls.append(x)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return x

    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        evaluate_found_pairs(breaks_on_the_third, find_paired_folder(pairs), pairs, tmp, progress="off")
    assert not out.exists() and not list(tmp_path.glob(".per_image.csv*"))
    for name in NAMES:
        (pairs / "moire" / name).write_bytes(b"")
    with pytest.raises(InputDataError,
                       match=r"^none of the 4 selected pairs in .* is readable \(generic layout, 4 skipped; the first, "):
        evaluate_found_pairs(lambda x: x, find_paired_folder(pairs), pairs, progress="off")


def test_the_gate_rescores_the_test_split_as_served(pairs, restore, tmp_path):
    frame = pd.DataFrame({"pair_id": range(4), "split": "test", "moire_path": [f"moire/{n}" for n in NAMES],
                          "clean_path": [f"clean/{n}" for n in NAMES]})
    model = build_model(ModelSpec("unet", 8, 2), seed=0)
    gate = score_on_gate(model, GateSet(frame, pairs, "digest"), torch.device("cpu"), TILING)
    expected = summarize(in_memory_scores(restore, pairs, NAMES))
    keys = [key for metric in ("psnr", "ssim", "mse") for key in (metric, f"identity_{metric}")]  # the input's too
    assert gate == {key: expected[key] for key in keys}
    found = indexed_pairs(frame, pairs)
    assert [p.name for p in found.pairs] == NAMES and found.pairs[0].moire_path == pairs / "moire" / "a.png"
