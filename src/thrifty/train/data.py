"""Elastic sampling and adaptive batching over any map-style dataset.

The sampler's state is global: an epoch number and how many samples of that epoch's permutation
have been consumed by completed optimizer steps. Each optimizer step takes the next `M` samples of
the permutation and splits them into micro-batches (replica-major within each accumulation
micro-step), so a restart with a different number of replicas, or a different batch size, simply
continues at the exact next sample. The permutation depends only on the seed and the epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset, default_collate

from thrifty.errors import ThriftyError

if TYPE_CHECKING:
    from thrifty.train.interface import JobHandle


class ElasticSampler:
    """Shards each global batch of one epoch's permutation over replicas and micro-steps."""

    def __init__(
        self, length: int, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0
    ) -> None:
        if length < 1:
            raise ThriftyError("the dataset is empty: give the loader at least one sample")
        self.length = length
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.position = 0  # samples of this epoch consumed by completed optimizer steps
        self._cached: tuple[tuple[int, int], torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        """This epoch's order of the samples (computed once per epoch: it costs milliseconds)."""
        if self._cached is not None and self._cached[0] == (epoch, self.seed):
            return self._cached[1]
        if not self.shuffle:
            order = torch.arange(self.length)
        else:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.length, generator=generator)
        self._cached = ((epoch, self.seed), order)
        return order

    def next_batch(self, atomic_bsz: int, accum_steps: int) -> list[list[int]] | None:
        """This replica's micro-batches for the next optimizer step, or None at the epoch's end.

        A short final batch is split as evenly as the samples allow; fewer samples than
        micro-batches end the epoch (every replica must get at least one sample per micro-step).
        """
        pieces = self.num_replicas * (accum_steps + 1)
        want = pieces * atomic_bsz
        remaining = self.length - self.position
        if remaining < pieces:
            return None
        take = min(want, remaining)
        chunk = self.permutation(self.epoch)[self.position : self.position + take].tolist()
        bounds = np.linspace(0, take, pieces + 1).round().astype(int)
        return [
            chunk[bounds[k * self.num_replicas + self.rank] : bounds[k * self.num_replicas
                                                                      + self.rank + 1]]
            for k in range(accum_steps + 1)
        ]

    def batch_total(self, atomic_bsz: int, accum_steps: int) -> int:
        """Samples the next optimizer step consumes over all replicas."""
        return min(
            self.num_replicas * (accum_steps + 1) * atomic_bsz, self.length - self.position
        )

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.seed = int(state["seed"])


def check_dataset(length: int, world: int, min_local: int, batch: int | None = None) -> None:
    """Fail before training where `world` replicas cannot each get `min_local` samples, or the
    dataset holds less than one global `batch`."""
    if length < world * max(min_local, 1):
        raise ThriftyError(
            f"the dataset has {length} samples, too few for {world} replicas with at least "
            f"{min_local} each (local_bsz_bounds); use fewer replicas or a larger dataset"
        )
    if batch is not None and batch > length:
        raise ThriftyError(
            f"the dataset has {length} samples, fewer than one batch of {batch} over {world} "
            "replicas; lower batch_size or use fewer replicas"
        )


def _collate_tensors(dataset: TensorDataset) -> Callable[[Sequence[int]], Any]:
    def collate(indices: Sequence[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(tensor[index] for tensor in dataset.tensors)

    return collate


class AdaptiveDataLoader:
    """Yields this replica's micro-batches; the job re-chooses their size and accumulation.

    Create it through `Job.loader`. While a global batch is being yielded, `micro_index`,
    `accum_steps` and `is_sync_micro` tell the data-parallel wrapper whether the coming backward
    pass is an accumulation micro-step or the one that synchronises and steps.
    """

    def __init__(
        self,
        job: JobHandle,
        dataset: Dataset[Any],
        atomic_bsz: int,
        accum_steps: int,
        shuffle: bool = True,
        seed: int = 0,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        self.job = job
        self.dataset = dataset
        self.length = len(dataset)  # type: ignore[arg-type]
        self.sampler = ElasticSampler(
            self.length, job.env.world_size, job.env.rank, shuffle=shuffle, seed=seed
        )
        self.atomic_bsz = atomic_bsz
        self.accum_steps = accum_steps
        if collate_fn is None and isinstance(dataset, TensorDataset):
            self._fetch = _collate_tensors(dataset)
        else:
            collate = collate_fn or default_collate
            self._fetch = lambda indices: collate([dataset[i] for i in indices])
        self.micro_index = 0
        self.micro_count = 1
        self.current_batch_size = 0  # samples of the global batch being yielded
        self.current_local = 0  # samples of this replica's current micro-batch
        self._active = False
        self._pending: tuple[int, int] | None = None

    @property
    def batch_size(self) -> int:
        """Total batch size of the current configuration (all replicas and micro-steps)."""
        return self.job.env.world_size * self.atomic_bsz * (self.accum_steps + 1)

    @property
    def in_batch(self) -> bool:
        """Whether a global batch is being yielded (False between epochs and before the first)."""
        return self._active

    @property
    def is_sync_micro(self) -> bool:
        """Whether the micro-batch being trained on ends its optimizer step."""
        return not self._active or self.micro_index == self.micro_count - 1

    def set_config(self, atomic_bsz: int, accum_steps: int) -> None:
        """Use this micro-batch size and accumulation from the next optimizer step on."""
        self._pending = (int(atomic_bsz), int(accum_steps))

    def __len__(self) -> int:
        """Optimizer steps left in this epoch at the current configuration (an estimate when
        the batch size changes during the epoch)."""
        remaining = self.length - self.sampler.position
        return -(-remaining // self.batch_size) if remaining > 0 else 0

    def __iter__(self) -> Iterator[Any]:
        self.sampler.epoch = self.job.epoch
        while True:
            if self._pending is not None:
                self.atomic_bsz, self.accum_steps = self._pending
                self._pending = None
            micro = self.sampler.next_batch(self.atomic_bsz, self.accum_steps)
            if micro is None:
                break
            total = self.sampler.batch_total(self.atomic_bsz, self.accum_steps)
            self.micro_count = len(micro)
            self.current_batch_size = total
            self._active = True
            for index, indices in enumerate(micro):
                self.micro_index = index
                self.current_local = len(indices)
                if index == len(micro) - 1:
                    # The step that follows completes this batch: a checkpoint taken in it
                    # must resume at the next one.
                    self.sampler.position += total
                yield self._fetch(indices)
        self._active = False
        self.micro_index = 0
        self.micro_count = 1

    def end_epoch(self) -> None:
        self.sampler.position = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler.state_dict(),
            "batch_size": self.batch_size,
            "atomic_bsz": self.atomic_bsz,
            "accum_steps": self.accum_steps,
        }
