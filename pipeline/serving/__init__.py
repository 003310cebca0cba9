"""Serving the champion over HTTP.

`app`: the web page and image API of `demoire serve` (fastapi and uvicorn, as Prefect brings them;
python-multipart for uploads). `bounded`: MLflow's own scoring app (`/invocations`) behind request
bounds, run by `python -m pipeline.serving` (`make serve-model`).
"""
