"""Child processes that end with the run that started them, and runs that end cleanly when stopped."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

PR_SET_PDEATHSIG = 1  # prctl(2) option: a signal the kernel sends a process when its parent dies


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> None:
    """Have the kernel send `signum` to this process when `parent` dies (an orphan of a killed run would go on
    working, or wait forever); exit at once if it is already gone. Used as a pool worker initializer."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):  # no prctl (not Linux): an orphan then outlives its run
        return
    if os.getppid() != parent:  # the run died before the line above
        os._exit(1)


SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "fish"}  # what runs a command line (`dvc repro` runs stages through one)
STARTER_POLL_S = 1.0


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, ppid, …); empty once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _process_start(pid: int) -> str | None:
    """A process's start time (None once it is gone), which tells a reused pid apart."""
    fields = _stat_fields(pid)
    return fields[19] if len(fields) > 19 else None


def _parent_of(pid: int) -> int:
    """A process's parent pid (0 once it is gone)."""
    fields = _stat_fields(pid)
    return int(fields[1]) if len(fields) > 1 else 0


def _command_name(pid: int) -> str:
    """A process's command name ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def end_with_starter() -> None:
    """SIGTERM this process once the one that started it is gone: the nearest ancestor that is not a shell (a
    shell between them, as `dvc repro` puts one, outlives a killed dvc, so the kernel's parent-death signal would
    not come). Polls /proc once a second from a daemon thread; does nothing where there is no /proc."""
    starter = os.getppid()
    while _command_name(starter) in SHELLS and _parent_of(starter) > 1:
        starter = _parent_of(starter)
    started = _process_start(starter)
    if started is None:
        return

    def watch() -> None:
        while _process_start(starter) == started:
            time.sleep(STARTER_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="end-with-starter", daemon=True).start()


def exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM handler: unwind like an error (an MLflow run ends FAILED, temp outputs go) instead of vanishing."""
    # Once: a DDP rank gets SIGTERM from torchrun, then from the kernel as torchrun exits (die_with_parent); the
    # second one would cut short the unwinding of the first. SIGKILL still stops a process stuck in it.
    signal.signal(signum, signal.SIG_IGN)
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM unwinds as Ctrl-C does (temp files of atomic writes go, exit 143) instead of
    ending the process where it stands; the previous handler is put back after (a caller running a command in
    its own process). Signals reach the main thread only: elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def unwinds_on_sigterm(command: Callable[..., Any]) -> Callable[..., Any]:
    """A command run within `sigterm_unwinds` (its signature kept, for typer)."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        with sigterm_unwinds():
            return command(*args, **kwargs)

    run.unwinds_on_sigterm = True  # type: ignore[attr-defined]  # what a test of the commands looks for
    return run


@contextlib.contextmanager
def signals_held(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within the block, SIGTERM and Ctrl-C wait: the first that came is raised again as it ends, to the
    handler that was there before. Main thread only, as Python's handlers are (elsewhere the block runs as is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {signum: signal.signal(signum, lambda got, frame: caught.append(got)) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            signal.raise_signal(caught[0])


def import_native(name: str) -> ModuleType:
    """Import `name` with SIGTERM and Ctrl-C held until it is done."""
    # onnx's extension module runs Python code while the C++ of its init is on the stack; a handler that raises
    # there (exit_on_sigterm, KeyboardInterrupt) is an exception C++ cannot pass on, and the process dies of
    # SIGABRT or SIGSEGV instead of unwinding: 2 in 100 SIGTERMs at random times during `import onnx` did.
    with signals_held():
        return importlib.import_module(name)
