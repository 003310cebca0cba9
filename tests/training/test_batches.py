import numpy as np
import torch

from pipeline.training.batches import EpochSampler, make_train_loader


def _pairs(rng, n=8, size=24):
    """Distinct random pairs, so any change of order or crop changes the batches."""
    return [(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            for _ in range(n)]


def _epochs(loader, epochs=(1, 2)):
    """Every batch of the given epochs, as (moiré, clean) tensors."""
    batches = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        batches.extend(loader)
    return batches


def test_batches_do_not_depend_on_the_number_of_loader_workers(rng):
    pairs = _pairs(rng)
    serial = _epochs(make_train_loader(pairs, 16, 4, seed=3))
    parallel = _epochs(make_train_loader(pairs, 16, 4, seed=3, num_workers=2))
    assert len(serial) == len(parallel) == 4
    for (a_moire, a_clean), (b_moire, b_clean) in zip(serial, parallel):
        assert torch.equal(a_moire, b_moire) and torch.equal(a_clean, b_clean)
    assert not torch.equal(serial[0][0], serial[2][0])  # a new epoch reshuffles and recrops


def test_the_ranks_together_see_the_single_process_batches(rng):
    pairs = _pairs(rng)
    single = _epochs(make_train_loader(pairs, 16, 4, seed=3))
    ranks = [_epochs(make_train_loader(pairs, 16, 2, seed=3, rank=r, world_size=2)) for r in range(2)]
    for step, (moire, _) in enumerate(single):
        together = torch.cat([ranks[0][step][0], ranks[1][step][0]])
        # Same samples with the same crops; only their order inside the global batch differs.
        assert sorted(map(bytes, together.numpy())) == sorted(map(bytes, moire.numpy()))


def test_moire_and_clean_get_the_same_transform_with_independent_flips(rng):
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    loader = make_train_loader([(image, image.copy())] * 64, 16, 64, seed=0)  # patch = image: no crop
    (moire, clean), = _epochs(loader, epochs=(1,))
    assert torch.equal(moire, clean)
    # Independent flips and rotations reach all 8 symmetries of the square; flips sharing one
    # seed would always agree and reach fewer.
    assert len({bytes(m.numpy()) for m in moire}) == 8


def test_sampler_drops_the_uneven_tail_so_ranks_agree():
    sampler = EpochSampler(7, seed=1, rank=1, world_size=2)
    assert len(sampler) == len(list(sampler)) == 3
    indices = {i for r in range(2) for i, _ in EpochSampler(7, seed=1, rank=r, world_size=2)}
    assert len(indices) == 6


def _stored(pairs, folder):
    """`pairs` written as PNG files, and read back lazily."""
    from pipeline.data.dataset import StoredPairs
    from pipeline.io import write_png

    paths = []
    for i, (moire, clean) in enumerate(pairs):
        paths.append((folder / "moire" / f"{i}.png", folder / "clean" / f"{i}.png"))
        write_png(paths[-1][0], moire)
        write_png(paths[-1][1], clean)
    return StoredPairs(paths)


def test_pairs_read_from_disk_in_the_workers_give_the_in_memory_batches(rng, tmp_path):
    pairs = _pairs(rng)
    in_memory = _epochs(make_train_loader(pairs, 16, 4, seed=3))
    stored = _epochs(make_train_loader(_stored(pairs, tmp_path), 16, 4, seed=3, num_workers=2))
    assert len(stored) == len(in_memory) == 4
    for (a_moire, a_clean), (b_moire, b_clean) in zip(in_memory, stored):
        assert torch.equal(a_moire, b_moire) and torch.equal(a_clean, b_clean)


def test_stored_pairs_digest_follows_the_file_bytes(rng, tmp_path):
    from pipeline.io import write_png
    from pipeline.training.batches import PairBatches

    pairs = _pairs(rng, n=3)
    stored = _stored(pairs, tmp_path)
    before = PairBatches(stored, 16, 2, seed=0).digest()
    assert PairBatches(stored[:], 16, 2, seed=0).digest() == before
    write_png(stored.paths[2][1], pairs[2][1] // 2)
    assert PairBatches(stored, 16, 2, seed=0).digest() != before
