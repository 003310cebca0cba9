"""Fresh synthetic pairs rendered batch by batch during training, on CPU or CUDA."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.config import SynthesizeParams
from pipeline.data.splits import in_train_share
from pipeline.errors import InputDataError
from pipeline.moire.layer_bank import shared_layer_bank
from pipeline.moire.simulate import content_batch, sample_capture_params, simulate_batch
from pipeline.sources import collect_sources, load_source

ON_THE_FLY_STREAM = 0x4F4E4C4E  # "ONLN": apart from the file dataset's per-pair streams


def held_out_sources(cfg: SynthesizeParams, index: pd.DataFrame, val_fraction: float,
                     test_fraction: float) -> frozenset[str]:
    """The sources training on the fly must not render: those of the pairs index's val and test splits, and those
    it lacks (no pair drawn from them, or every pair rejected) outside train's own share, which a set with more
    pairs could put in val or test."""
    labels = dict(zip(index["source_id"], index["split"]))
    sources = cfg.sources
    ids = [spec.source_id for spec in collect_sources(sources.bundled, sources.procedural, sources.folders,
                                                      sources.screen_kinds)[0]]
    trainable = {source for source in ids if labels.get(source) == "train"}
    trainable |= {source for source in in_train_share(ids, val_fraction, test_fraction) if source not in labels}
    return frozenset(ids) - trainable


class SyntheticPairStream(IterableDataset):
    """Endless (moiré, clean) batches, (B, 3, S, S) in [0, 1], from the batched simulator on `device`.

    Sources are decoded and their crops resized on the CPU; the simulation itself runs on `device`.
    Batches come from (seed, rank, epoch, DataLoader worker id): call `set_epoch` each epoch for new
    pairs, as with DistributedSampler; each DDP rank passes its own `rank`. Use with
    `DataLoader(stream, batch_size=None)`, and with `num_workers=0` when `device` is CUDA (forked
    workers cannot use CUDA).
    """

    def __init__(self, cfg: SynthesizeParams, seed: int, batch_size: int, device: str | torch.device = "cpu",
                 rank: int = 0, held_out: frozenset[str] = frozenset()):
        self.cfg, self.seed, self.batch_size, self.device = cfg, seed, batch_size, torch.device(device)
        self.rank = rank
        self.held_out = held_out  # source ids never rendered (held_out_sources)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the next iteration's pairs from this epoch's stream."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.cfg
        specs, _ = collect_sources(cfg.sources.bundled, cfg.sources.procedural, cfg.sources.folders, cfg.sources.screen_kinds)
        specs = [spec for spec in specs if spec.source_id not in self.held_out]
        if not specs:
            raise InputDataError("no usable source images outside the val and test splits: enable "
                                 "synthesize.sources.bundled or procedural, or add folders")
        worker = get_worker_info()
        rng = np.random.default_rng([self.seed, ON_THE_FLY_STREAM, self.rank, self.epoch, worker.id if worker else 0])
        bank = shared_layer_bank(cfg, self.seed)  # kept across epochs: its slots do not depend on them
        while True:
            sources = [load_source(specs[int(rng.integers(len(specs)))], self.seed) for _ in range(self.batch_size)]
            captures = [sample_capture_params(cfg, source.shape[:2], rng) for source in sources]
            if bank is not None:
                captures = [bank.assign(c, source.shape[:2], rng) for c, source in zip(captures, sources)]
            batch = content_batch(sources, captures).to(self.device, non_blocking=True)
            yield simulate_batch(batch, captures, cfg.size, cfg.optics.supersample, bank)
