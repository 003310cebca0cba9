"""Evaluation: metrics (torchmetrics), evaluating a model on pairs, before/after grids."""
