"""What importing `flows` does outside a plain checkout: an installed package, a base install, `--help`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_an_installed_package_keeps_its_state_in_the_working_folder_not_in_site_packages(tmp_path):
    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "flows", site / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "DVC_ROOT")}
    env["PYTHONPATH"] = f"{site}{os.pathsep}{ROOT}"  # the copied flows first, the library from the checkout
    result = _run(["-c", "import os, flows; print(flows.__file__); print(flows.PROJECT_ROOT); "
                         "print(os.environ['PREFECT_HOME'])"], work, env)
    assert result.returncode == 0, result.stderr
    package, project, home = result.stdout.split("\n")[:3]
    assert Path(package).parent == site / "flows"
    assert Path(project) == work.resolve() and Path(home) == work.resolve() / ".prefect"


def test_a_checkout_keeps_its_state_in_the_checkout_whatever_the_working_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "DVC_ROOT")}
    env["PYTHONPATH"] = str(ROOT)
    result = _run(["-c", "import flows; print(flows.PROJECT_ROOT)"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == ROOT


def test_a_stage_without_the_pipeline_extra_says_which_extra_in_one_line(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['prefect'] = None  # as if not installed\n")
    env = {**os.environ, "PYTHONPATH": f"{hide}{os.pathsep}{ROOT}", "PREFECT_HOME": str(tmp_path / "prefect")}
    stage = _run(["-m", "flows.preprocess", "--help"], ROOT, env)
    assert stage.returncode == 2
    assert stage.stderr == ("error: the flows need prefect, which is not installed: "
                            "pip install 'demoire[pipeline]'\n")
    imported = _run(["-c", "import flows"], ROOT, env)  # a library import raises, as a missing module does
    assert imported.returncode == 1 and "ModuleNotFoundError: the flows need prefect" in imported.stderr


def test_a_stage_asked_for_help_starts_no_server(tmp_path):
    home = tmp_path / "prefect-home"
    env = {**os.environ, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    result = _run(["-m", "flows.preprocess", "--help"], ROOT, env)
    assert result.returncode == 0 and "--summary" in result.stdout
    assert not (home / "stage-server.json").exists()
