"""What a registration records of the checkout it ran in."""

import subprocess

from pipeline.provenance import git_commit, git_dirty

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def test_git_dirty_counts_edited_tracked_files_but_not_dvc_lock(tmp_path):
    assert git_dirty(tmp_path) is None and git_commit(tmp_path) is None  # not a repository
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    for name in ("params.yaml", "dvc.lock"):
        (tmp_path / name).write_text("a: 1\n")
    subprocess.run([*GIT, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*GIT, "commit", "-qm", "init"], cwd=tmp_path, check=True)
    assert git_dirty(tmp_path) is False
    (tmp_path / "dvc.lock").write_text("a: 2\n")  # `dvc repro` rewrites it: not an edit of what ran
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert git_dirty(tmp_path) is False
    (tmp_path / "params.yaml").write_text("a: 2\n")
    assert git_dirty(tmp_path) is True
