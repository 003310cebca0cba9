"""The web app of `demoire serve` (fastapi and uvicorn, as Prefect brings them; python-multipart for uploads)."""
