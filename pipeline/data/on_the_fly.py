"""Fresh synthetic pairs rendered batch by batch during training, on CPU or CUDA."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.config import SynthesizeParams
from pipeline.errors import InputDataError
from pipeline.moire.simulate import sample_capture_params, screen_content, simulate_batch
from pipeline.sources import collect_sources, load_source

ON_THE_FLY_STREAM = 0x4F4E4C4E  # "ONLN": apart from the file dataset's per-pair streams


class SyntheticPairStream(IterableDataset):
    """Endless (moiré, clean) batches, (B, 3, S, S) in [0, 1], from the batched simulator on `device`.

    Sources are decoded and their crops resized on the CPU; the simulation itself runs on `device`.
    Each DataLoader worker draws its own stream from (seed, worker id), so batches never repeat.
    Use with `DataLoader(stream, batch_size=None)`.
    """

    def __init__(self, cfg: SynthesizeParams, seed: int, batch_size: int, device: str | torch.device = "cpu"):
        self.cfg, self.seed, self.batch_size, self.device = cfg, seed, batch_size, torch.device(device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.cfg
        specs, _ = collect_sources(cfg.sources.bundled, cfg.sources.procedural, cfg.sources.folders)
        if not specs:
            raise InputDataError("no usable source images for on-the-fly synthesis")
        worker = get_worker_info()
        rng = np.random.default_rng([self.seed, ON_THE_FLY_STREAM, worker.id if worker else 0])
        generator = torch.Generator(device=self.device).manual_seed(int(rng.integers(2**62)))
        while True:
            captures, content = [], []
            for _ in range(self.batch_size):
                source = load_source(specs[int(rng.integers(len(specs)))], self.seed)
                capture = sample_capture_params(cfg, source.shape[:2], rng)
                captures.append(capture)
                content.append(torch.from_numpy(screen_content(source, capture)).permute(2, 0, 1))
            batch = torch.stack(content).to(self.device, non_blocking=True)
            yield simulate_batch(batch, captures, cfg.size, cfg.optics.supersample, generator)
