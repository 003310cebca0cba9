"""`python -m pipeline.serving`: MLflow's scoring app for the registered model, with bounds (see bounded.py)."""

from pipeline.serving.bounded import main

main()
