"""Where a run came from: the git commit of the project, the DVC hashes of its data (read from dvc.lock), and
digests of the code whose output a resumable run keeps."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import yaml


def git_commit(project_dir: Path) -> str | None:
    """The commit `project_dir` is checked out at; None outside a git repository or without git."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_dir, capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def git_dirty(project_dir: Path) -> bool | None:
    """Whether tracked files of `project_dir` differ from its commit (params.yaml or code edited, not committed);
    None outside a git repository or without git. dvc.lock does not count: `dvc repro` itself rewrites it."""
    try:
        # GIT_OPTIONAL_LOCKS=0: a status that refreshes the index would take index.lock from a user's git command
        result = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                 ":(exclude)dvc.lock"], cwd=project_dir, capture_output=True, text=True, timeout=30,
                                env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(result.stdout.strip()) if result.returncode == 0 else None


PROJECT_ROOT = Path(__file__).resolve().parents[1]


def code_digest(parts: tuple[str, ...], versions: str) -> str:
    """Digest of the project's source files under `parts` (folders or files, relative to the project root) and of
    `versions` (the library versions their output depends on)."""
    digest = hashlib.sha256(versions.encode())
    for part in parts:
        path = PROJECT_ROOT / part
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(f"{file.relative_to(PROJECT_ROOT)}\n".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def locked_out_hash(lock_file: Path, out: str) -> str | None:
    """The md5 dvc.lock records for output `out` of any stage (a `.dir` hash for folders); None if absent."""
    try:
        lock = yaml.safe_load(Path(lock_file).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    root = Path(lock_file).resolve().parent
    wanted = (root / out).resolve()  # dvc.lock paths are relative to the folder holding dvc.yaml
    for stage in (lock.get("stages") or {}).values():
        for entry in stage.get("outs") or []:
            if "path" in entry and (root / entry["path"]).resolve() == wanted:
                return entry.get("md5")
    return None


def data_version_tags(lock_file: Path, data: Path, pairs_index: Path) -> dict[str, str]:
    """`data_version` (the dataset folder's DVC hash) and `pairs_version` (the split index's), where recorded."""
    found = {"data_version": locked_out_hash(lock_file, str(data)),
             "pairs_version": locked_out_hash(lock_file, str(pairs_index))}
    return {key: value for key, value in found.items() if value}
