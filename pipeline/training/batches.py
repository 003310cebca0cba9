"""Training batches: stored pairs through one loader for the whole run, or pairs synthesised on the fly.

Stored pairs are normally a StoredPairs (decoded as they are used, in the loader workers when there
are any), so the train split need not fit in memory; an in-memory list gives the same batches.

Stored pairs' order and crops depend only on (seed, epoch): each epoch's shuffle and every
sample's augmentation seed are drawn in the main process by the sampler, so the batches are the
same whatever the number of loader workers, across a resumed run, and across DDP ranks: rank r of
w takes every w-th sample of the same permutation, so the union of the ranks' k-th batches is the
single-process run's k-th batch of w times the size.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from pipeline.config import SynthesizeParams, TrainParams
from pipeline.data.augment import paired_augmentation
from pipeline.data.dataset import Pair, PairDataset, StoredPairs, to_tensor
from pipeline.data.on_the_fly import SyntheticPairStream
from pipeline.training.distributed import World

TRAIN_STREAM = 0x5452414E  # "TRAN"


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of one epoch's shuffling and augmentation: a resumed run replays the same epochs."""
    return int(hashlib.sha256(f"{seed}:{TRAIN_STREAM}:{epoch}".encode()).hexdigest()[:15], 16)


class EpochSampler(Sampler[tuple[int, int]]):
    """This rank's share of a per-epoch permutation, as (index, augmentation seed); call set_epoch."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        """Draw the next iteration's order and crops from this epoch's stream."""
        self.epoch = epoch

    def __len__(self) -> int:
        # Every rank takes the same count (the tail that does not divide evenly is dropped),
        # or DDP's gradient all-reduce would wait forever for the rank that ran out.
        return self.size // self.world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator)
        item_seeds = torch.randint(2**62, (self.size,), generator=generator)
        used = len(self) * self.world_size
        for position in range(self.rank, used, self.world_size):
            yield int(order[position]), int(item_seeds[position])


class AugmentedPairs(PairDataset):
    """Pairs through the paired augmentation, each seeded by the key the sampler hands over."""

    def __init__(self, pairs: Sequence[Pair], patch_size: int):
        super().__init__(pairs, paired_augmentation(patch_size, seed=0))

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        # One generator shared by all transforms (Compose.set_random_seed would give each transform
        # the same seed, so every flip would copy the first one's coin).
        self.transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        moire, clean = self.pairs[index]
        out = self.transform(image=moire, clean=clean)
        return to_tensor(out["image"]), to_tensor(out["clean"])


def make_train_loader(
    pairs: Sequence[Pair], patch_size: int, batch_size: int, seed: int, num_workers: int = 0,
    pin_memory: bool = False, rank: int = 0, world_size: int = 1,
) -> DataLoader:
    """Loader of augmented patches over all epochs; call `loader.sampler.set_epoch(e)` before each.

    Workers persist across epochs (started once per run) and prefetch; pinned memory lets the
    host-to-GPU copy overlap compute. They are spawned, not forked: the training process runs
    threads (Prefect's log and event workers, gloo), and a fork copies their locks mid-use.
    """
    sampler = EpochSampler(len(pairs), seed, rank, world_size)
    return DataLoader(
        AugmentedPairs(pairs, patch_size),
        batch_size=batch_size,
        sampler=sampler,
        drop_last=len(sampler) >= batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        multiprocessing_context="spawn" if num_workers > 0 else None,
    )


class TrainingBatches(Protocol):
    """Where an epoch's (moiré, clean) batches come from."""

    steps_per_epoch: int

    def epoch(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch (numbered from 1), the same every time it is asked for."""

    def digest(self) -> str:
        """What the batches depend on, for the checkpoint fingerprint."""


class PairBatches:
    """Augmented patches of the stored training pairs (see make_train_loader)."""

    def __init__(self, pairs: Sequence[Pair], patch_size: int, batch_size: int, seed: int, num_workers: int = 0,
                 pin_memory: bool = False, rank: int = 0, world_size: int = 1):
        self.pairs = pairs
        self.loader = make_train_loader(pairs, patch_size, batch_size, seed, num_workers, pin_memory, rank, world_size)
        self.steps_per_epoch = len(self.loader)

    def epoch(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's shuffle and crops."""
        self.loader.sampler.set_epoch(epoch)
        return self.loader

    def digest(self) -> str:
        """Digest of the pairs (see pairs_content_digest)."""
        return pairs_content_digest(self.pairs)


def pairs_content_digest(pairs: Sequence[Pair]) -> str:
    """Digest of every pair's files when stored, else of every pair's pixels."""
    if isinstance(pairs, StoredPairs):
        return pairs.digest()
    digest = hashlib.sha256()
    for moire, clean in pairs:
        digest.update(moire.tobytes())
        digest.update(clean.tobytes())
    return digest.hexdigest()


def stored_pair_batches(pairs: Sequence[Pair], cfg: TrainParams, seed: int, device: torch.device = torch.device("cpu"),
                        world: World = World()) -> PairBatches:
    """Batches of `pairs` as `cfg` asks (patch and batch size, loader workers), for this rank."""
    return PairBatches(pairs, cfg.patch_size, cfg.batch_size, seed, cfg.num_workers,
                       pin_memory=device.type == "cuda", rank=world.rank, world_size=world.size)


# Synthesis settings that choose where pairs render, not what they are (the output bytes do not depend on them):
# a checkpoint of on-the-fly training resumes across them.
RENDERED_ANYWHERE = {"workers", "dask_address"}


class SyntheticBatches:
    """Pairs rendered on the training device as they are needed, never the same twice.

    Rendering runs in the training process (loader workers would make the batches depend on
    their number), on the GPU when training there.
    """

    def __init__(self, cfg: SynthesizeParams, pairs_per_epoch: int, patch_size: int, batch_size: int, seed: int,
                 device: torch.device, rank: int = 0, world_size: int = 1, held_out: frozenset[str] = frozenset()):
        self.cfg = cfg.model_copy(update={"size": patch_size})
        self.held_out = held_out
        self.stream = SyntheticPairStream(self.cfg, seed, batch_size, device, rank, held_out)
        self.steps_per_epoch = max(1, pairs_per_epoch // (batch_size * world_size))

    def epoch(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """`steps_per_epoch` fresh batches from this epoch's stream."""
        self.stream.set_epoch(epoch)
        return itertools.islice(iter(self.stream), self.steps_per_epoch)

    def digest(self) -> str:
        """Digest of the synthesis params the pairs are drawn from, less those that only say where they render."""
        digest = hashlib.sha256(self.cfg.model_dump_json(exclude=RENDERED_ANYWHERE).encode())
        if self.held_out:  # other sources held out are other pairs
            digest.update(json.dumps(sorted(self.held_out)).encode())
        return digest.hexdigest()
