"""Named kill points for fault-injection tests: `DEMOIRE_KILL_AT=<point>` makes the process SIGKILL itself there.

A `kill -9` at a chosen instant, deterministic where an outside timer is not. Unset (always, outside the
tests and benchmarks/fault_injection.py), a kill point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

# Files and folders are published through pipeline.io, which offers `before:<name>` (written to a temp
# name, not yet renamed into place) and `after:<name>` (renamed) for every output; these are the ones
# the fault-injection suite kills at, spread over every stage.
KILL_POINTS = (
    "synthesize.shard_done",  # synthesize: the first shard's pairs and done-file written, the rest not rendered
    "before:synthesize",  # synthesize: every pair rendered into the temp folder, not yet renamed into place
    "after:synthesize",  # synthesize: pairs in place, calibration report not written
    "before:pairs.parquet",  # preprocess: pairs validated and split, index not written
    "after:checkpoint.pt",  # train: first epoch's checkpoint written
    "before:model.pt",  # train: trained, model not written
    "before:metrics.json",  # evaluate: scored, metrics not written
    "register.run_started",  # register: MLflow run started, nothing logged
    "register.model_logged",  # register: model logged, run not ended
    "register.version_created",  # register: version registered, no decision
    "register.decision_recorded",  # register: decision recorded on the version, champion not moved
    "register.champion_moved",  # register: champion moved, version not yet marked decided
    "register.decided",  # register: decided, registration.json not written
)
# Not a stage's: `evaluate.row_<n>`, an evaluation's per-image CSV with its n-th row written and flushed (the
# resumed `demoire evaluate --csv` is tested with it); `promote.pending_recorded` and `promote.champion_moved`,
# `demoire promote` before and after it moves champion; `rollback.history_written`, before the alias moves back.


def kill_point(name: str) -> None:
    """SIGKILL this process when DEMOIRE_KILL_AT names this point (see KILL_POINTS)."""
    if os.environ.get("DEMOIRE_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
