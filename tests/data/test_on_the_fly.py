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
