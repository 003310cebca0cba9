"""The deployments' pull step (prefect.yaml): each flow run moves into its worker's checkout of the project."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import DemoireError

HOW = "start workers with `make worker POOL=…` in a checkout of the project, or set DEMOIRE_PROJECT_DIR to one"


def enter_project_dir(directory: str) -> dict[str, str]:
    """Make `directory` (the worker's DEMOIRE_PROJECT_DIR) the flow run's working directory, or say in one line
    why it cannot be: Prefect's own step ran the flow from a temporary folder when the variable was unset."""
    if not directory.strip() or "{{" in directory:  # unset: empty, or the template left as written
        raise DemoireError(f"DEMOIRE_PROJECT_DIR is not set on this worker: {HOW}")
    path = Path(directory).expanduser().resolve()
    if not (path / "dvc.yaml").is_file() or not (path / "flows").is_dir():
        raise DemoireError(f"DEMOIRE_PROJECT_DIR={directory} is not a checkout of this project (no dvc.yaml and "
                           f"flows/ there): {HOW}")
    os.chdir(path)
    return {"directory": str(path)}
