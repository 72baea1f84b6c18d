"""P×K identity sampling: every batch holds exactly P identities with K images each."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class PKBatchSampler(Sampler[list[int]]):
    """Yields index batches of P identities × K images, reshuffled each epoch from (seed, epoch).

    Identities with fewer than K images are sampled with replacement. For distributed training every rank
    builds the same global batch list and takes every `num_replicas`-th batch, so ranks see disjoint batches
    and the same number of them. Call `set_epoch` each epoch, as with DistributedSampler.
    """

    def __init__(
        self,
        pids: Sequence[int],
        num_pids: int,
        num_instances: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        self.index_by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            self.index_by_pid[int(pid)].append(index)
        if len(self.index_by_pid) < num_pids:
            raise ValueError(
                f"P×K sampling needs at least P={num_pids} identities; the data has {len(self.index_by_pid)}"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.num_pids, self.num_instances = num_pids, num_instances
        self.seed, self.epoch = seed, 0
        self.num_replicas, self.rank = num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        groups: dict[int, list[list[int]]] = {}
        for pid in sorted(self.index_by_pid):
            indices = self.index_by_pid[pid]
            k = self.num_instances
            if len(indices) < k:
                order = torch.randint(len(indices), (k,), generator=generator).tolist()
            else:
                order = torch.randperm(len(indices), generator=generator).tolist()
            chosen = [indices[i] for i in order]
            groups[pid] = [chosen[i : i + k] for i in range(0, len(chosen) - k + 1, k)]
        batches = []
        available = [pid for pid in groups if groups[pid]]
        while len(available) >= self.num_pids:
            picks = torch.randperm(len(available), generator=generator)[: self.num_pids].tolist()
            batch = []
            for pick in sorted(picks):
                batch.extend(groups[available[pick]].pop())
            batches.append(batch)
            available = [pid for pid in available if groups[pid]]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._global_batches()
        usable = len(batches) - len(batches) % self.num_replicas
        yield from batches[self.rank : usable : self.num_replicas]

    def __len__(self) -> int:
        # The count depends on the shuffle (which identities run out first), so build this epoch's list.
        return len(self._global_batches()) // self.num_replicas
