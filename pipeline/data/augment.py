"""Paired augmentation: the same random geometric transform applied to moiré and clean images."""

from __future__ import annotations

import albumentations as A


def paired_augmentation(patch_size: int, seed: int) -> A.Compose:
    """Random crop, flips and 90° rotations, identical for `image` (moiré) and `clean`."""
    return A.Compose(
        [
            A.RandomCrop(height=patch_size, width=patch_size),
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
        ],
        additional_targets={"clean": "image"},
        seed=seed,
    )
