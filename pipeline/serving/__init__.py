"""Serving the champion over HTTP.

`app`: the web page and image API of `demoire serve` (the `serve` extra: fastapi, uvicorn and
python-multipart). `bounded`: MLflow's own scoring app (`/invocations`) behind request
bounds, run by `python -m pipeline.serving` (`make serve-model`).
"""
