"""Resumable synthesis: a killed run started again renders only its unfinished shards, and ends with the
bytes of an uninterrupted run; a run with other params never reuses the shards of an earlier one."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipeline.data.synthetic import (SET_DIR, SHARDS_DIR, local_shard_runner, synthesis_fingerprint, synthesize_dataset,
                                     work_folder)
from pipeline.errors import InputDataError
from pipeline.sources import collect_sources

KILLED_RUN = """
import json, sys
from pathlib import Path
from pipeline.config import parse_params
from pipeline.data.synthetic import local_shard_runner, synthesize_dataset
params = parse_params(json.loads(sys.argv[1]))
cfg = params.synthesize
synthesize_dataset(cfg, params.seed, Path(sys.argv[2]), local_shard_runner(cfg, params.seed, cfg.workers))
"""


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _orphans_gone(marker: str, wait_s: float = 10.0) -> bool:
    """Whether no process started with `marker` on its command line is left (polled for `wait_s`)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]:
            return True
        time.sleep(0.1)
    return False


def _synthesize(params, out: Path, workers: int = 1, runner=None) -> dict:
    runner = runner or local_shard_runner(params.synthesize, params.seed, workers)
    return synthesize_dataset(params.synthesize, params.seed, out, runner)


def _work(params, out: Path) -> Path:
    cfg = params.synthesize
    specs, _ = collect_sources(cfg.sources.bundled, cfg.sources.procedural, cfg.sources.folders, cfg.sources.screen_kinds)
    return work_folder(out, synthesis_fingerprint(cfg, params.seed, specs))


def _interrupted_runner(params, shards_before_crash: int):
    """A runner that finishes some shards and then fails, as a worker lost mid-run would."""
    runner = local_shard_runner(params.synthesize, params.seed, 1)

    def run(shards, specs, work):
        for done, records in enumerate(runner(shards, specs, work), start=1):
            yield records
            if done == shards_before_crash:
                raise RuntimeError("worker lost")

    return run


def test_a_killed_synthesis_resumes_without_redoing_finished_shards_to_the_same_bytes(tmp_path, tiny_raw, tiny_params):
    whole = tmp_path / "whole" / "synthesize"
    _synthesize(tiny_params, whole)

    out = tmp_path / "resumed" / "synthesize"
    tiny_raw["synthesize"]["workers"] = 2  # killed with two workers, resumed with one: shards do not depend on it
    log = tmp_path / "killed.log"
    with log.open("w") as sink:  # a file, not a pipe: a surviving pool worker would hold a pipe open
        killed = subprocess.run([sys.executable, "-c", KILLED_RUN, json.dumps(tiny_raw), str(out)], stdout=sink,
                                stderr=sink, env={**os.environ, "DEMOIRE_KILL_AT": "synthesize.shard_done"}, timeout=300)
    assert killed.returncode == -9, log.read_text()[-2000:]
    assert not out.exists()  # nothing half-written where readers look
    assert _orphans_gone(str(out)), "pool workers outlived the killed run"
    work = _work(tiny_params, out)
    markers = list((work / SHARDS_DIR).glob("*.json"))
    assert len(markers) >= 1
    finished = json.loads(markers[0].read_text())
    before = {r["moire_path"]: (work / SET_DIR / r["moire_path"]).stat().st_mtime_ns for r in finished}

    summary = _synthesize(tiny_params, out)

    assert summary["pairs"] == tiny_params.synthesize.n_pairs
    assert sorted(_files(out)) == sorted(_files(whole))  # no temp file of a writer killed mid-PNG either
    assert _files(out) == _files(whole)  # every image, the manifest and the summary
    assert {path: (out / path).stat().st_mtime_ns for path in before} == before  # finished pairs not rendered again
    assert not work.exists()
    # the lock file stays, unlocked, and the mark of the set in place
    assert sorted(p.name for p in out.parent.iterdir()) == [".synthesize.lock", ".synthesize.published", "synthesize"]


def test_a_params_change_discards_the_stale_shards(tmp_path, tiny_raw, tiny_params):
    out = tmp_path / "synthesize"
    with pytest.raises(RuntimeError, match="worker lost"):
        synthesize_dataset(tiny_params.synthesize, tiny_params.seed, out, _interrupted_runner(tiny_params, 2))
    stale = _work(tiny_params, out)
    assert len(list((stale / SHARDS_DIR).glob("*.json"))) == 2

    from pipeline.config import parse_params

    tiny_raw["synthesize"]["optics"] = {"blur_sigma": [0.2, 0.3]}
    changed = parse_params(tiny_raw)
    _synthesize(changed, out)
    fresh = tmp_path / "fresh" / "synthesize"
    _synthesize(changed, fresh)

    assert not stale.exists()
    assert _files(out) == _files(fresh)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".synthesize.lock", ".synthesize.published", "fresh",
                                                          "synthesize"]


def test_a_run_stopped_after_publishing_finds_its_set_in_place_and_renders_nothing(tmp_path, tiny_raw, tiny_params):
    out = tmp_path / "synthesize"
    first = _synthesize(tiny_params, out)
    before = _files(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    # as a kill in the synthesis report leaves it: the set and its mark in place, DVC's lock not updated
    assert _synthesize(tiny_params, out, runner=_no_rendering) == first
    assert _files(out) == before and {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps

    (out / "manifest.parquet").write_bytes(b"edited")  # a set that is not the one published: rendered again
    assert _synthesize(tiny_params, out) == first and _files(out) == before
    from pipeline.config import parse_params

    tiny_raw["seed"] += 1  # other params: the mark of the set in place says another fingerprint
    with pytest.raises(AssertionError, match="rendered"):
        _synthesize(parse_params(tiny_raw), out, runner=_no_rendering)


def _no_rendering(shards, specs, work):
    raise AssertionError(f"rendered {len(shards)} shards")
    yield


def test_a_kill_while_a_set_is_published_leaves_the_old_set_or_the_new_one_whole(tmp_path, tiny_raw, tiny_params):
    from pipeline.config import parse_params

    out = tmp_path / "synthesize"
    _synthesize(tiny_params, out)
    old = _files(out)
    tiny_raw["seed"] += 1
    changed = parse_params(tiny_raw)
    fresh = tmp_path / "fresh" / "synthesize"
    _synthesize(changed, fresh)
    for point, expected in (("before:synthesize", old), ("after:synthesize", _files(fresh))):
        with tmp_path.joinpath(f"{point[:-11]}.log").open("w") as sink:
            killed = subprocess.run([sys.executable, "-c", KILLED_RUN, json.dumps(tiny_raw), str(out)], stdout=sink,
                                    stderr=sink, env={**os.environ, "DEMOIRE_KILL_AT": point}, timeout=300)
        assert killed.returncode == -9
        assert _files(out) == expected  # never a part of either


def test_missing_rendered_pairs_are_an_error_naming_the_work_folder(tmp_path, tiny_params):
    def lost(shards, specs, work):  # workers that wrote elsewhere (a Dask worker without the shared filesystem)
        yield from ([] for _ in shards)

    with pytest.raises(InputDataError, match=r"12 of 12 rendered pairs are missing from .*partial-.*shared"):
        synthesize_dataset(tiny_params.synthesize, tiny_params.seed, tmp_path / "synthesize", lost)
    assert not (tmp_path / "synthesize").exists()


def test_temp_files_of_writers_killed_mid_image_are_not_published(tmp_path, tiny_params):
    import socket

    out = tmp_path / "synthesize"
    with pytest.raises(RuntimeError):
        synthesize_dataset(tiny_params.synthesize, tiny_params.seed, out, _interrupted_runner(tiny_params, 1))
    # A writer killed mid-PNG whose pid still shows (an unreaped zombie) leaves a temp file no later write removes.
    stray = _work(tiny_params, out) / SET_DIR / "moire" / f".000011.png.{socket.gethostname()}.{os.getpid()}-x.tmp"
    stray.write_bytes(b"half a png")
    _synthesize(tiny_params, out)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert len(list((out / "moire").iterdir())) == tiny_params.synthesize.n_pairs


def test_a_second_run_into_the_same_folder_stops_at_once_and_leaves_the_first_ones_work(tmp_path, tiny_raw, tiny_params):
    out = tmp_path / "synthesize"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock; "
                               "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(60)",
                               str(tmp_path / ".synthesize.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        stale = tmp_path / ".synthesize.partial-0123456789abcdef"  # the first run's work, other params
        stale.mkdir()
        with pytest.raises(InputDataError, match=r"another synthesize run is writing .*synthesize .*wait for it"):
            _synthesize(tiny_params, out)
        assert stale.is_dir() and not out.exists()
    finally:
        holder.kill()
        holder.wait()
    _synthesize(tiny_params, out)  # the kernel released the killed holder's lock
    assert not stale.exists() and len(list((out / "moire").iterdir())) == tiny_params.synthesize.n_pairs


def test_another_mkl_branch_renders_into_another_work_folder(tmp_path, tiny_params, monkeypatch):
    out = tmp_path / "synthesize"
    pinned = _work(tiny_params, out)
    monkeypatch.setenv("MKL_CBWR", "AUTO")  # a user's own branch: other last bits, so no shards shared
    assert _work(tiny_params, out) != pinned
