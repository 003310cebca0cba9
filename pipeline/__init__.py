"""Demoiré pipeline library: synthesis, data, models, training, evaluation, registry.

Nothing here imports Prefect or DVC; every function takes plain arguments.
"""
