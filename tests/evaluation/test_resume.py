"""A killed evaluation that writes a per-image CSV resumes: only the pairs not in its partial file are scored again,
and the finished CSV and means are an uninterrupted run's."""

import logging
import os

import pandas as pd
import pytest
import torch
from filelock import FileLock

from pipeline.data.paired_folder import find_paired_folder
from pipeline.errors import InputDataError
from pipeline.evaluation.evaluate import evaluate_found_pairs
from pipeline.evaluation.resume import (PARTIAL_FLOAT_FORMAT, model_digest, partial_csv, partial_csvs, resumable_csv,
                                        scoring_digest)
from pipeline.export import ExportedModel, export_model
from pipeline.inference import spatial_multiple
from pipeline.models import ModelSpec, build_model
from tests.evaluation.test_real_sets import real_looking_pairs

NAMES = ["a.png", "b.png", "c.png", "d.png"]
SETTINGS = {"infer": {"tile_size": 32}, "device": "cpu"}


@pytest.fixture
def pairs(tmp_path, rng):
    return real_looking_pairs(tmp_path / "pairs", rng, NAMES)


SPEC = ModelSpec("unet", 8, 2)


@pytest.fixture
def model():
    return build_model(SPEC, seed=0).eval()


def digest_of(model, pairs, spec=SPEC, **settings):
    """The scoring digest of `model` on every pair under `pairs`."""
    return scoring_digest(model, spec, find_paired_folder(pairs), {**SETTINGS, **settings})


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
        scores = evaluate_found_pairs(restore, found, pairs, resumed.path, progress="off", done=resumed.done,
                                      float_format=PARTIAL_FLOAT_FORMAT)
        resumed.publish(scores.per_image)
    return scores


def test_a_killed_run_resumes_with_the_bytes_and_summary_of_an_uninterrupted_one(pairs, model, tmp_path):
    digest = digest_of(model, pairs)
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
    digest = digest_of(model, pairs)
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


def test_the_digest_follows_weights_spec_pairs_device_and_mkl(pairs, model, monkeypatch):
    digest, pinned = digest_of(model, pairs), os.environ["MKL_CBWR"]
    monkeypatch.setenv("MKL_CBWR", "AUTO")  # MKL-backed operations may then differ in the last bit
    assert digest_of(model, pairs) != digest
    monkeypatch.setenv("MKL_CBWR", pinned)
    assert digest_of(build_model(SPEC, seed=0), pairs) == digest
    assert digest_of(build_model(SPEC, seed=1), pairs) != digest
    assert digest_of(model, pairs, spec=ModelSpec("unet", 8, 2, "chroma", 16.0)) != digest  # same weights
    assert digest_of(model, pairs, device="cuda:0") != digest
    os.utime(pairs / "clean" / "a.png", ns=(1, 1))  # a pair rewritten since
    assert digest_of(model, pairs) != digest



def test_an_exported_onnx_model_is_known_by_its_file(model, tmp_path):
    pytest.importorskip("onnxruntime")
    digests = []
    for seed in (0, 1):  # an ONNX session has no state dict: without the file's bytes both would look alike
        path = tmp_path / f"model-{seed}.onnx"
        net = build_model(SPEC, seed=seed).eval()
        export_model(net, SPEC, "onnx", path, spatial_multiple(net), sizes=((32, 32),))
        digests.append(model_digest(ExportedModel(path), SPEC))
    assert digests[0] != digests[1]
    assert model_digest(ExportedModel(tmp_path / "model-0.onnx"), SPEC) == digests[0]


def test_a_run_with_other_settings_keeps_the_killed_runs_rows_until_one_finishes(pairs, model, tmp_path):
    csv = tmp_path / "scores.csv"
    digest, other = digest_of(model, pairs), digest_of(model, pairs, device="cuda:0")
    with pytest.raises(KeyboardInterrupt):
        scored(Restorer(model, fail_on=3), pairs, csv, digest)
    with pytest.raises(KeyboardInterrupt):  # a mistaken option, stopped
        scored(Restorer(model, fail_on=2), pairs, csv, other)
    assert partial_csvs(csv) == sorted([partial_csv(csv, digest), partial_csv(csv, other)])
    again = Restorer(model)
    scored(again, pairs, csv, digest)
    assert again.calls == 2 and partial_csvs(csv) == []  # resumed; every partial of the CSV gone once it is written


def test_a_partial_that_cannot_be_read_back_is_scored_again(pairs, model, tmp_path, caplog):
    csv = tmp_path / "scores.csv"
    digest = digest_of(model, pairs)
    partial_csv(csv, digest).write_bytes(b"image,psnr\n\xff\xfe,1\n")  # not UTF-8
    caplog.set_level(logging.WARNING, logger="pipeline.evaluation.resume")
    again = Restorer(model)
    scores = scored(again, pairs, csv, digest)
    assert again.calls == 4 and list(scores.per_image.image) == NAMES and "cannot be read back" in caplog.text


def test_rows_come_in_the_pairs_order_whatever_was_scored_first(pairs, model):
    found = find_paired_folder(pairs)
    whole = evaluate_found_pairs(Restorer(model), found, pairs, progress="off")
    done = whole.per_image[whole.per_image.image.isin(["a.png", "c.png"])]  # b.png was unreadable then
    resumed = evaluate_found_pairs(Restorer(model), found, pairs, progress="off", done=done)
    pd.testing.assert_frame_equal(resumed.per_image, whole.per_image)
    assert resumed.summary == whole.summary


def test_a_run_that_fails_before_its_first_row_leaves_no_partial_file(pairs, model, tmp_path):
    csv = tmp_path / "scores.csv"
    with pytest.raises(KeyboardInterrupt):
        scored(Restorer(model, fail_on=1), pairs, csv, digest_of(model, pairs))
    assert partial_csvs(csv) == [] and not csv.exists()


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
