import itertools

import pytest
import torch

from pipeline.data.on_the_fly import SyntheticPairStream


def _batches(tiny_params, n: int):
    stream = SyntheticPairStream(tiny_params.synthesize, tiny_params.seed, batch_size=3, device="cpu")
    return list(itertools.islice(iter(stream), n))


def test_stream_yields_fresh_aligned_batches_reproducibly(tiny_params):
    first, second = _batches(tiny_params, 2)
    size = tiny_params.synthesize.size
    for moire, clean in (first, second):
        assert moire.shape == clean.shape == (3, 3, size, size)
        assert 0.0 <= float(moire.min()) and float(moire.max()) <= 1.0
    assert not torch.equal(first[0], second[0])  # every batch is new
    again = _batches(tiny_params, 1)[0]
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    stream = SyntheticPairStream(tiny_params.synthesize, tiny_params.seed, batch_size=3)
    stream.set_epoch(1)
    assert not torch.equal(next(iter(stream))[0], first[0])  # a new epoch draws new pairs


@pytest.mark.gpu
def test_stream_renders_on_cuda(tiny_params):
    stream = SyntheticPairStream(tiny_params.synthesize, tiny_params.seed, batch_size=4, device="cuda")
    moire, clean = next(iter(stream))
    assert moire.is_cuda and moire.shape == clean.shape == (4, 3, tiny_params.synthesize.size, tiny_params.synthesize.size)


def test_training_on_the_fly_never_renders_a_val_or_test_source(tmp_path, tiny_params, monkeypatch):
    import pandas as pd

    import pipeline.data.on_the_fly as on_the_fly
    from pipeline.data.splits import source_draw
    from pipeline.errors import InputDataError
    from pipeline.sources import collect_sources
    from pipeline.training.distributed import World
    from pipeline.training.stage import training_batches

    cfg = tiny_params.synthesize.sources
    ids = [spec.source_id for spec in collect_sources(cfg.bundled, cfg.procedural, cfg.folders)[0]]
    # the index lacks the last two sources (no pair drawn from them): only one in train's own share may be rendered
    pd.DataFrame({"pair_id": range(4), "split": ["train", "train", "val", "test"], "source_id": ids[:4],
                  "moire_path": "m.png", "clean_path": "c.png"}).to_parquet(tmp_path / "pairs.parquet")
    unindexed_train_share = {source for source in ids[4:] if source_draw(source) >= 0.2 + 0.2}
    assert len(unindexed_train_share) == 1  # the tiny sources: one of each kind
    on_the_fly_training = tiny_params.train.model_copy(update={"synthetic_pairs_per_epoch": 4})
    params = tiny_params.model_copy(update={"train": on_the_fly_training})
    drawn = []
    original = on_the_fly.load_source
    monkeypatch.setattr(on_the_fly, "load_source",
                        lambda spec, seed: drawn.append(spec.source_id) or original(spec, seed))

    batches = training_batches(params, tmp_path / "pairs.parquet", tmp_path, torch.device("cpu"), World())
    for epoch in range(1, 6):
        list(batches.epoch(epoch))
    assert set(drawn) == {*ids[:2], *unindexed_train_share}, set(drawn)
    assert batches.digest() != _digest_holding_nothing_out(params)  # other sources held out: no checkpoint resumed

    held_out_all = on_the_fly.SyntheticPairStream(params.synthesize, 1, 2, held_out=frozenset(ids))
    with pytest.raises(InputDataError, match="no usable source images outside the val and test splits"):
        next(iter(held_out_all))


def _digest_holding_nothing_out(params) -> str:
    """The digest of on-the-fly batches that hold nothing out."""
    from pipeline.training.batches import SyntheticBatches

    return SyntheticBatches(params.synthesize, 4, params.train.patch_size, params.train.batch_size, params.seed,
                            torch.device("cpu")).digest()
