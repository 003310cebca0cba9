"""Datasets: rendering synthetic pairs, manifests, validation, splits, torch datasets, augmentation."""
