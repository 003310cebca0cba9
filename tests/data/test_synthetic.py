import numpy as np
import pandas as pd
import pytest

from pipeline.data.manifest import validate_pairs, write_manifest
from pipeline.data.splits import split_by_source
from pipeline.errors import InputDataError
from pipeline.data.synthetic import render_shard, shard_indices
from pipeline.sources import collect_sources
from pipeline.io import write_png


def _render(tmp_path, params, shards):
    cfg = params.synthesize
    specs, _ = collect_sources(cfg.sources.bundled, cfg.sources.procedural, cfg.sources.folders)
    records = [r for shard in shards for r in render_shard(shard, specs, cfg, params.seed, tmp_path)]
    return write_manifest(records, tmp_path / "manifest.parquet")


def test_output_bytes_do_not_depend_on_sharding(tmp_path, tiny_params):
    n = tiny_params.synthesize.n_pairs
    one = _render(tmp_path / "one", tiny_params, shard_indices(n, 1))
    many = _render(tmp_path / "many", tiny_params, list(reversed(shard_indices(n, 5))))
    pd.testing.assert_frame_equal(one, many)
    for rel in list(one.moire_path) + list(one.clean_path):
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "many" / rel).read_bytes()
    assert (tmp_path / "one" / "manifest.parquet").read_bytes() == (tmp_path / "many" / "manifest.parquet").read_bytes()


def test_manifest_records_source_and_every_sampled_parameter(tmp_path, tiny_params):
    frame = _render(tmp_path, tiny_params, shard_indices(4, 2)[:1] + [[2, 3]])
    assert list(frame.pair_id) == [0, 1, 2, 3]
    from dataclasses import fields

    from pipeline.moire.patterns import BandPattern
    from pipeline.moire.simulate import CaptureParams, pitch_ratio_bounds

    optional = {"layer_slot", "layer_orientation",  # columns of a dataset with synthesize.moire_layer_bank
                "defocus_spread", "focus_position", "demosaic",  # ...with optics.defocus_spread, isp.demosaic
                "moire_free", "crosstalk"}  # ...with synthesize.moire_free_fraction, sensor.crosstalk
    captured = [f.name for f in fields(CaptureParams) if f.name != "pattern" and f.name not in optional]
    assert not optional & set(frame.columns)
    drawn = [f"pattern_{f.name}" for f in fields(BandPattern)]  # NaN where the physics made the moiré
    for column in ["source_id", "generator", *captured, *drawn]:
        assert column in frame.columns, column
    assert set(frame.generator) == {"screen"}
    lo, hi = pitch_ratio_bounds(tiny_params.synthesize)
    assert frame.pitch_ratio.between(lo, hi).all()
    # beat-directed captures (the default) derive the distance from the drawn beat period
    assert frame.beat_period_px.between(*tiny_params.synthesize.optics.beat_period_px).all()
    assert (frame.distance_mm > frame.focal_length_mm).all()
    # each pair draws from its own stream (seed, stage, pair index): no two pairs share a capture
    assert frame.beat_period_px.nunique() == frame.pitch_ratio.nunique() == len(frame)


def test_shards_cover_every_index_once():
    shards = shard_indices(10, 4)
    assert sorted(i for s in shards for i in s) == list(range(10))
    assert shard_indices(3, 8) == [[0], [1], [2]]


def test_validation_rejects_corrupt_and_mismatched_pairs(tmp_path, tiny_params):
    frame = _render(tmp_path, tiny_params, [[0, 1, 2]])
    (tmp_path / frame.moire_path[1]).write_bytes(b"not a png")
    write_png(tmp_path / frame.clean_path[2], np.zeros((10, 10, 3), np.uint8))
    usable, rejected = validate_pairs(frame, tmp_path)
    assert list(usable.pair_id) == [0]
    assert list(rejected.pair_id) == [1, 2]
    assert "cannot read image" in rejected.reason[0]
    assert "sizes differ" in rejected.reason[1]


def test_split_keeps_each_source_in_one_split():
    sources = pd.Series([f"s{i % 10}" for i in range(100)])
    splits = split_by_source(sources, 0.2, 0.2)
    assert set(splits) == {"train", "val", "test"}
    assert (pd.DataFrame({"s": sources, "split": splits}).groupby("s").split.nunique() == 1).all()
    assert splits.equals(split_by_source(sources.sample(frac=1, random_state=3), 0.2, 0.2).sort_index())


def test_a_source_keeps_its_split_when_sources_are_added_or_removed():
    before = pd.Series([f"procedural/{i:05d}" for i in range(200)] + ["folder/photos/a.png"])
    after = pd.Series([f"procedural/{i:05d}" for i in range(50, 400)] + ["folder/photos/a.png", "folder/photos/b.png"])
    old = dict(zip(before, split_by_source(before, 0.15, 0.15)))
    new = dict(zip(after, split_by_source(after, 0.15, 0.15)))
    assert all(new[source] == old[source] for source in set(old) & set(new))
    # the fractions hold on average
    counts = split_by_source(pd.Series([f"p{i}" for i in range(4000)]), 0.15, 0.25).value_counts() / 4000
    assert abs(counts["test"] - 0.25) < 0.03 and abs(counts["val"] - 0.15) < 0.03


def test_no_source_is_in_train_for_one_set_and_in_test_for_another_unless_warned(caplog):
    # a handful of sources leaves a split empty now and then: it borrows a source that can never be in the opposite
    # split (test never takes one that another set trains on), or says that it could not
    pool = [f"folder/photos/{i}.png" for i in range(40)]
    rng = np.random.default_rng(0)
    seen: dict[str, set[str]] = {}
    for _ in range(400):
        ids = list(rng.choice(pool, size=int(rng.integers(3, 9)), replace=False))
        caplog.clear()
        splits = split_by_source(pd.Series(ids), 0.15, 0.15)
        assert set(splits) == {"train", "val", "test"}
        if "may move back" in caplog.text:
            continue
        for source, split in zip(ids, splits):
            seen.setdefault(source, set()).add(split)
    assert not [source for source, splits in seen.items() if {"train", "test"} <= splits]
    assert sum(len(splits) > 1 for splits in seen.values()) > 5  # small sets did borrow sources


def test_every_split_gets_a_source_however_few():
    for n in range(3, 13):
        splits = split_by_source(pd.Series([f"photo-{n}-{i}" for i in range(n)]), 0.15, 0.15)
        assert set(splits) == {"train", "val", "test"}, n
    with pytest.raises(InputDataError, match="at least 3 distinct source images"):
        split_by_source(pd.Series(["a", "b", "a"]), 0.15, 0.15)


def test_pairs_from_too_few_sources_are_refused_naming_the_params(tmp_path, tiny_params):
    from pipeline.data.imported import INDEX_COLUMNS, ImportedPairs
    from pipeline.data.pairs_index import index_pairs

    frame = _render(tmp_path, tiny_params, [[0, 1, 2, 3]])
    usable = frame.assign(source_id=["procedural/a", "procedural/b", "procedural/a", "procedural/b"])
    rejected = pd.DataFrame({"reason": ["cannot read image"]})
    nothing = ImportedPairs(pd.DataFrame(columns=INDEX_COLUMNS), pd.DataFrame(columns=["reason"]), [])
    with pytest.raises(InputDataError) as info:
        index_pairs(tiny_params, (usable, rejected), nothing)
    assert str(info.value) == (
        "the 4 usable synthetic pairs (1 rejected) come from 2 source image(s); splitting them into train, val and "
        "test by source needs 3 or more: raise synthesize.n_pairs (12) or add sources (synthesize.sources)")


def test_fewer_pairs_than_sources_says_which_get_none_and_counts_only_those_used(tmp_path, tiny_raw, caplog):
    import json

    from pipeline.config import parse_params
    from pipeline.data.synthetic import local_shard_runner, synthesize_dataset

    photos = tmp_path / "photos"
    for i in range(3):
        write_png(photos / f"photo_{i}.png", np.full((40, 40, 3), 60 * i, np.uint8))
    tiny_raw["synthesize"].update(n_pairs=5, sources={"bundled": False, "procedural": 6, "folders": [str(photos)]})
    params = parse_params(tiny_raw)
    with caplog.at_level("WARNING", logger="pipeline.data.synthetic"):
        summary = synthesize_dataset(params.synthesize, params.seed, tmp_path / "set",
                                     local_shard_runner(params.synthesize, params.seed, 1))
    shown = pd.read_parquet(tmp_path / "set" / "manifest.parquet")["source_id"].nunique()
    assert summary["sources_used"] == shown == 5
    assert json.loads((tmp_path / "set" / "summary.json").read_text())["sources_used"] == 5
    warnings = [r.getMessage() for r in caplog.records if "get no pair" in r.getMessage()]
    assert len(warnings) == 1 and "below the 9 usable sources: 4 get no pair" in warnings[0]
    assert "raise n_pairs to 9 or more" in warnings[0]
    # the 9 sources are the 6 procedural screens, then the photos; pairs 0–4 show sources 0, 1, 3, 5 and 7
    assert "photo_0.png" in warnings[0] and "photo_2.png" in warnings[0] and "photo_1.png" not in warnings[0]
    assert warnings[0].index("photo_") < warnings[0].index("procedural")  # the user's photos named first
