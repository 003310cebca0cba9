"""A killed evaluation that writes a per-image CSV resumes: only the pairs not in its partial file are scored again,
and the finished CSV has the bytes of an uninterrupted run."""

import logging
import os

import pandas as pd
import pytest
import torch
from filelock import FileLock

from pipeline.data.paired_folder import find_paired_folder
from pipeline.errors import InputDataError
from pipeline.evaluation.evaluate import evaluate_found_pairs
from pipeline.evaluation.resume import PARTIAL_FLOAT_FORMAT, model_digest, partial_csv, resumable_csv, scoring_digest
from pipeline.models import ModelSpec, build_model
from tests.evaluation.test_real_sets import real_looking_pairs

NAMES = ["a.png", "b.png", "c.png", "d.png"]
SETTINGS = {"infer": {"tile_size": 32}, "device": "cpu"}


@pytest.fixture
def pairs(tmp_path, rng):
    return real_looking_pairs(tmp_path / "pairs", rng, NAMES)


@pytest.fixture
def model():
    return build_model(ModelSpec("unet", 8, 2), seed=0).eval()


class Restorer:
    """The model's output, counting calls; raises on call number `fail_on` (a kill mid-run)."""

    def __init__(self, model, fail_on=None):
        self.model, self.fail_on, self.calls = model, fail_on, 0

    def __call__(self, x):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt("killed")
        with torch.inference_mode():
            return self.model(x[None])[0].clamp(0, 1)


def scored(restore, pairs, csv, digest):
    """One evaluation writing `csv` resumably (as `demoire evaluate --csv` does)."""
    found = find_paired_folder(pairs)
    with resumable_csv(csv, digest) as resumed:
        return evaluate_found_pairs(restore, found, pairs, resumed.path, progress="off", done=resumed.done,
                                    float_format=PARTIAL_FLOAT_FORMAT)


def test_a_killed_run_resumes_with_the_bytes_and_summary_of_an_uninterrupted_one(pairs, model, tmp_path):
    digest = scoring_digest(model, find_paired_folder(pairs), SETTINGS)
    whole = scored(Restorer(model), pairs, tmp_path / "whole" / "scores.csv", digest)
    csv = tmp_path / "resumed" / "scores.csv"
    with pytest.raises(KeyboardInterrupt):
        scored(Restorer(model, fail_on=3), pairs, csv, digest)
    partial = partial_csv(csv, digest)
    assert not csv.exists() and len(pd.read_csv(partial)) == 2  # two rows survived the kill
    again = Restorer(model)
    resumed = scored(again, pairs, csv, digest)
    assert again.calls == 2  # only c.png and d.png restored
    assert csv.read_bytes() == (tmp_path / "whole" / "scores.csv").read_bytes() and not partial.exists()
    assert list(resumed.per_image.image) == NAMES
    assert resumed.summary == whole.summary  # the partial file keeps every digit


def test_an_unfinished_last_line_is_dropped_and_its_pair_scored_again(pairs, model, tmp_path):
    digest = scoring_digest(model, find_paired_folder(pairs), SETTINGS)
    scored(Restorer(model), pairs, tmp_path / "whole.csv", digest)
    csv = tmp_path / "scores.csv"
    with pytest.raises(KeyboardInterrupt):
        scored(Restorer(model, fail_on=4), pairs, csv, digest)
    partial = partial_csv(csv, digest)
    lines = partial.read_bytes().splitlines(keepends=True)
    partial.write_bytes(b"".join(lines[:3]) + lines[3][:20])  # header, a, b, and half of c
    again = Restorer(model)
    scored(again, pairs, csv, digest)
    assert again.calls == 2 and csv.read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_a_partial_file_of_another_model_or_changed_pairs_is_discarded(pairs, model, tmp_path, caplog):
    csv = tmp_path / "scores.csv"
    digest = scoring_digest(model, find_paired_folder(pairs), SETTINGS)
    with pytest.raises(KeyboardInterrupt):
        scored(Restorer(model, fail_on=3), pairs, csv, digest)
    other = build_model(ModelSpec("unet", 8, 2), seed=1).eval()
    assert model_digest(other) != model_digest(model)
    assert model_digest(build_model(ModelSpec("unet", 8, 2), seed=0)) == model_digest(model)
    assert scoring_digest(other, find_paired_folder(pairs), SETTINGS) != digest
    assert scoring_digest(model, find_paired_folder(pairs), {**SETTINGS, "device": "cuda:0"}) != digest
    os.utime(pairs / "clean" / "a.png", ns=(1, 1))  # a pair rewritten since
    changed = scoring_digest(model, find_paired_folder(pairs), SETTINGS)
    assert changed != digest
    caplog.set_level(logging.INFO, logger="pipeline.evaluation.resume")
    again = Restorer(model)
    scored(again, pairs, csv, changed)
    assert again.calls == 4 and "discarding" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".scores.csv.partial")) == []


def test_a_second_run_writing_the_same_csv_stops_at_once(pairs, model, tmp_path):
    csv = tmp_path / "scores.csv"
    with FileLock(tmp_path / ".scores.csv.lock"):
        with pytest.raises(InputDataError, match=r"^another evaluation is writing .*scores\.csv \(it holds .*\.lock\)"):
            scored(Restorer(model), pairs, csv, "digest")
    assert not csv.exists()


def test_the_code_digest_follows_the_files_named_and_only_them(tmp_path, monkeypatch):
    from pipeline import provenance

    monkeypatch.setattr(provenance, "PROJECT_ROOT", tmp_path)
    (tmp_path / "scoring").mkdir()
    (tmp_path / "scoring" / "metrics.py").write_text("A = 1\n")
    (tmp_path / "cli.py").write_text("B = 1\n")
    before = provenance.code_digest(("scoring",), "torch 2")
    (tmp_path / "cli.py").write_text("B = 2\n")
    assert provenance.code_digest(("scoring",), "torch 2") == before
    assert provenance.code_digest(("scoring",), "torch 3") != before
    (tmp_path / "scoring" / "metrics.py").write_text("A = 2\n")
    assert provenance.code_digest(("scoring",), "torch 2") != before
