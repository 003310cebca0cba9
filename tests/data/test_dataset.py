import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.data.dataset import PairDataset, StoredPairs, load_pairs, to_tensor
from pipeline.io import write_png


def _stored_set(tmp_path, rng, n=5):
    """n random pairs under tmp_path and the manifest frame listing them."""
    rows = []
    for i in range(n):
        rows.append({"pair_id": i, "moire_path": f"moire/{i:06d}.png", "clean_path": f"clean/{i:06d}.png",
                     "split": "train" if i < 3 else "val"})
        for key in ("moire_path", "clean_path"):
            write_png(tmp_path / rows[-1][key], rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    return pd.DataFrame(rows)


def test_stored_pairs_decode_each_pair_on_demand_and_slice_lazily(tmp_path, rng):
    frame = _stored_set(tmp_path, rng)
    stored = StoredPairs.listed_in(frame, tmp_path)
    in_memory = load_pairs(frame, tmp_path)
    assert len(stored) == 5
    every_other = stored[1::2]
    assert isinstance(every_other, StoredPairs) and len(every_other) == 2
    for (a, b), (c, d) in zip(every_other, in_memory[1::2]):
        assert np.array_equal(a, c) and np.array_equal(b, d)
    for (x, y), (moire, clean) in zip(PairDataset(stored), in_memory):
        assert x.shape == (3, 12, 10) and torch.equal(x, to_tensor(moire)) and torch.equal(y, to_tensor(clean))


def test_an_unreadable_stored_pair_names_its_file(tmp_path, rng):
    from pipeline.errors import InputDataError

    frame = _stored_set(tmp_path, rng, n=2)
    (tmp_path / "clean/000001.png").write_bytes(b"not a png")
    stored = StoredPairs.listed_in(frame, tmp_path)
    stored[0]
    with pytest.raises(InputDataError, match="000001.png"):
        stored[1]


def test_kept_pairs_are_decoded_once_and_shared_with_slices(tmp_path, rng, monkeypatch):
    import pipeline.data.dataset as dataset

    frame = _stored_set(tmp_path, rng)
    decoded = []
    real_read = dataset.read_rgb
    monkeypatch.setattr(dataset, "read_rgb", lambda path: decoded.append(path) or real_read(path))
    stored = StoredPairs.listed_in(frame, tmp_path)
    kept = stored.keep_decoded()
    assert stored.decoded_bytes() == 5 * 2 * 12 * 10 * 3
    decoded.clear()
    first = [kept[i] for i in range(5)]
    again = [kept[i] for i in range(5)] + list(kept[1:3])
    assert len(decoded) == 10  # each file once, whatever is asked after
    assert all(a is b for a, b in zip(first + first[1:3], again))
    lazy = [stored[i] for i in range(5)]
    assert len(decoded) == 20  # without keeping, every use decodes
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, lazy))


def test_a_split_is_kept_in_memory_only_when_it_fits_and_one_process_reads_it(tmp_path, rng, monkeypatch):
    import psutil

    from pipeline.training.stage import kept_in_memory_if_it_fits

    stored = StoredPairs.listed_in(_stored_set(tmp_path, rng), tmp_path)
    assert kept_in_memory_if_it_fits(stored, loader_workers=0).kept == {}
    assert kept_in_memory_if_it_fits(stored, loader_workers=2).kept is None
    small = psutil.virtual_memory()._replace(available=4 * stored.decoded_bytes() - 4)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: small)
    assert kept_in_memory_if_it_fits(stored, loader_workers=0).kept is None
