"""Samplers: Dassl's two (`build_sampler`), the seeded training order that several processes split
(`SeededSampler`), and the evaluation shards of several processes (`ShardSampler`)."""
from __future__ import annotations

from typing import Iterator, List, NamedTuple

import torch
from torch.utils.data import RandomSampler, Sampler, SequentialSampler

from .seeding import order_seed

AVAILABLE_SAMPLERS = ["RandomSampler", "SequentialSampler"]
DASSL_ONLY_SAMPLERS = ["RandomDomainSampler", "SeqDomainSampler", "RandomClassSampler"]


def build_sampler(sampler_type: str, cfg=None, data_source=None, batch_size: int = 32,
                  n_domain: int = 0, n_ins: int = 16) -> Sampler:
    """`RandomSampler` (fresh permutation per epoch from torch's global RNG) or `SequentialSampler`."""
    if sampler_type == "RandomSampler":
        return RandomSampler(data_source)
    if sampler_type == "SequentialSampler":
        return SequentialSampler(data_source)
    if sampler_type in DASSL_ONLY_SAMPLERS:
        raise NotImplementedError(
            f"Sampler {sampler_type!r} exists in Dassl but not in this engine; use one of {AVAILABLE_SAMPLERS}")
    raise ValueError(f"Unknown sampler type: {sampler_type!r} (expected one of {AVAILABLE_SAMPLERS})")


class SampleKey(NamedTuple):
    """What a seeded sampler hands the dataset: the sample's index and the epoch (its augmentation seed)."""

    index: int
    epoch: int


class SeededSampler(Sampler):
    """One process's training order: a pure function of (seed, epoch), split across processes.

    Each epoch's order is a permutation drawn from a generator seeded with ``order_seed(seed, epoch)``
    (the data order when `shuffle` is False). It is cut into global batches of `batch_size` with the
    trailing partial batch dropped (Dassl's rule; data smaller than one batch make one batch, with a
    single process only), and process `rank` of `num_replicas` takes the `rank`-th contiguous slice of
    ``batch_size / num_replicas`` of every global batch. So the batches of one step, concatenated in
    rank order, are the global batch one process gets, whatever the number of processes.

    Yields `SampleKey` (index, epoch); call `set_epoch` before each epoch.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, shuffle: bool = True, rank: int = 0,
                 num_replicas: int = 1) -> None:
        if num_samples <= 0 or batch_size <= 0:
            raise ValueError(f"need samples and a positive batch size, got {num_samples} and {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        if batch_size % num_replicas:
            raise ValueError(f"the global batch {batch_size} does not split into {num_replicas} equal parts")
        if num_samples < batch_size and num_replicas > 1:
            raise ValueError(f"{num_samples} samples are fewer than one global batch of {batch_size}")
        self.num_samples = num_samples
        self.seed = int(seed)
        self.shuffle = shuffle
        self.rank = rank
        self.num_replicas = num_replicas
        if num_samples >= batch_size:
            self.local_batch = batch_size // num_replicas
            self.num_steps = num_samples // batch_size
        else:
            self.local_batch = num_samples
            self.num_steps = 1
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_order(self) -> List[int]:
        """The global order of the current epoch (every process computes the same)."""
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator()
        generator.manual_seed(order_seed(self.seed, self.epoch))
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __len__(self) -> int:
        return self.num_steps * self.local_batch

    def __iter__(self) -> Iterator[SampleKey]:
        order = self.epoch_order()
        global_batch = self.local_batch * self.num_replicas
        for step in range(self.num_steps):
            start = step * global_batch + self.rank * self.local_batch
            for index in order[start:start + self.local_batch]:
                yield SampleKey(index, self.epoch)


class ShardSampler(Sampler):
    """Evaluation shard of process `rank` of `num_replicas`: a contiguous range of the data, no padding.

    The shards are disjoint and together cover every sample exactly once (sizes differ by at most
    one), so gathering the processes' predictions in rank order gives the data order back.
    """

    def __init__(self, num_samples: int, rank: int = 0, num_replicas: int = 1) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.start = rank * num_samples // num_replicas
        self.stop = (rank + 1) * num_samples // num_replicas

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))
