"""The deployments' pull step: into the worker's checkout, or one line saying how to name it."""

import os

import pytest

from flows.worker_steps import enter_project_dir
from pipeline.errors import DemoireError


@pytest.mark.parametrize("unset", ["", "  ", "{{ $DEMOIRE_PROJECT_DIR }}"])
def test_an_unset_project_dir_says_how_to_start_a_worker(unset):
    with pytest.raises(DemoireError, match=r"^DEMOIRE_PROJECT_DIR is not set on this worker: start workers with "
                                           r"`make worker POOL=…`"):
        enter_project_dir(unset)


def test_a_folder_that_is_not_the_project_is_refused_and_the_project_entered(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DemoireError, match=rf"^DEMOIRE_PROJECT_DIR={tmp_path} is not a checkout of this project"):
        enter_project_dir(str(tmp_path))
    project = tmp_path / "checkout"
    (project / "flows").mkdir(parents=True)
    (project / "dvc.yaml").write_text("stages: {}\n")
    assert enter_project_dir(str(project)) == {"directory": str(project.resolve())}
    assert os.getcwd() == str(project.resolve())
