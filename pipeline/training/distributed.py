"""Data-parallel training across processes started by `torchrun` (one per GPU; gloo on CPU).

A single process (no torchrun) is the world of one, and every helper here is then a no-op.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.errors import ParamsError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, checkpoints and writes outputs."""
        return self.rank == 0


def world_from_env() -> World:
    """The world torchrun describes in RANK / LOCAL_RANK / WORLD_SIZE; one process without them."""
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))


def check_gpu_count(processes: int) -> None:
    """One process per GPU: more processes than GPUs on CUDA is a params error."""
    if processes > torch.cuda.device_count():
        raise ParamsError(f"train.processes = {processes}: more than the {torch.cuda.device_count()} GPUs on this "
                          "machine; use one process per GPU")


@contextmanager
def process_group(device: torch.device) -> Iterator[tuple[World, torch.device]]:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU) and give this rank its device."""
    world = world_from_env()
    if world.size == 1:
        yield world, device
        return
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():  # local: per machine, when torchrun spans several
            raise ParamsError(f"local rank {world.local_rank} has no GPU: this machine has "
                              f"{torch.cuda.device_count()}; start one process per GPU")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield world, device
    finally:
        dist.destroy_process_group()


def sum_across(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of `values` over all ranks (the values themselves in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


# The pid of the process that started this one: the run, in torchrun's environment (pipeline.training.torchrun);
# torchrun, in its ranks'.
LAUNCHED_BY = "DEMOIRE_LAUNCHED_BY"


def torchrun_command(processes: int, module_args: list[str]) -> list[str]:
    """torchrun (`pipeline.training.torchrun`, with this interpreter) starting `processes` ranks of a module."""
    return [sys.executable, "-m", "pipeline.training.torchrun", "--standalone", f"--nproc-per-node={processes}",
            "-m", *module_args]
