import numpy as np

from pipeline.data.augment import paired_augmentation
from pipeline.data.dataset import PairDataset


def test_same_geometric_transform_on_both_images(rng):
    moire = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    clean = moire.copy()
    dataset = PairDataset([(moire, clean)] * 20, paired_augmentation(24, seed=3))
    for m, c in dataset:
        assert m.shape == (3, 24, 24)
        assert (m == c).all()


def test_augmentation_is_seeded(rng):
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    first = [paired_augmentation(16, seed=5)(image=image, clean=image)["image"] for _ in range(1)]
    second = [paired_augmentation(16, seed=5)(image=image, clean=image)["image"] for _ in range(1)]
    assert first[0].tobytes() == second[0].tobytes()
