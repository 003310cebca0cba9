"""Stages in the copy `dvc exp run --temp/--queue` makes: relative data folders from the project, and an
untracked preset named as such."""

from pathlib import Path

import yaml

import flows._entry as entry
from pipeline.config import parse_params


def _project_and_copy(tmp_path, monkeypatch) -> tuple[Path, Path]:
    project, copy = tmp_path / "project", tmp_path / "project" / ".dvc" / "tmp" / "exps" / "run1"
    copy.mkdir(parents=True)
    monkeypatch.setattr(entry, "PROJECT_ROOT", project.resolve())
    monkeypatch.chdir(copy)
    return project, copy


def test_relative_folders_only_the_project_has_are_read_from_it(tmp_path, monkeypatch, tiny_raw):
    project, copy = _project_and_copy(tmp_path, monkeypatch)
    (project / "photos").mkdir()
    (project / "real" / "moire").mkdir(parents=True)
    (copy / "tracked").mkdir()  # in git, so in the copy: the copy's own
    raw = tiny_raw | {"preprocess": {**tiny_raw.get("preprocess", {}), "datasets": [{"path": "real", "split": "test"}]}}
    raw["synthesize"] = {**raw["synthesize"], "sources": {**raw["synthesize"].get("sources", {}),
                                                          "folders": ["photos", "tracked", "/abs/elsewhere"]}}
    params = entry.with_project_paths(parse_params(raw))
    assert params.synthesize.sources.folders == [project.resolve() / "photos", Path("tracked"), Path("/abs/elsewhere")]
    assert params.preprocess.datasets[0].path == project.resolve() / "real"
    monkeypatch.setattr(entry, "PROJECT_ROOT", copy.resolve())  # a plain `dvc repro`: paths as written
    assert entry.with_project_paths(parse_params(raw)).preprocess.datasets[0].path == Path("real")


def test_a_preset_file_missing_from_the_copy_is_named_with_how_to_include_it(tmp_path, monkeypatch):
    project, copy = _project_and_copy(tmp_path, monkeypatch)
    (project / "presets").mkdir()
    (project / "presets" / "mine.yaml").write_text("base: default\n")
    (copy / "params.yaml").write_text(yaml.safe_dump({"synthesize": {"preset": "presets/mine.yaml"}}))
    assert entry.untracked_preset_hint(copy / "params.yaml") == (
        " (presets/mine.yaml is in the project but not in this experiment's copy, which holds only the files git "
        "tracks: `git add presets/mine.yaml` and commit it, or run the experiment in the workspace)")
    (copy / "presets").mkdir()
    (copy / "presets" / "mine.yaml").write_text("base: default\n")  # tracked: no hint
    assert entry.untracked_preset_hint(copy / "params.yaml") == ""
