"""Batching and deterministic loading.

Randomness design. Each sample gets its own seed, derived in the main process from
(seed, epoch, position in the epoch) and sent to the worker together with the index. The worker
seeds torch's default CPU generator, numpy's global generator and `random` from it just for
that sample, then restores them. So a sample's augmentation depends only on
(seed, epoch, position): the same with 0, 2 or 8 workers, persistent or not, and reproducible
when a run resumes at epoch k. Transforms need no seeding of their own; they draw from torch's
default generator (see `instaseg.data.transforms`).

The epoch advances by one each time a pass over the loader completes; `loader.set_epoch(k)`
jumps to epoch k (to resume).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler

from instaseg.data.dataset import InstanceDataset
from instaseg.data.sampler import ShuffleSampler, derive_seed
from instaseg.structures import Instances


def collate(batch: list[tuple[Tensor, Instances]]) -> tuple[list[Tensor], list[Instances]]:
    """[(image, instances), ...] -> ([image, ...], [instances, ...]); lists because image
    sizes differ."""
    return [image for image, _ in batch], [instances for _, instances in batch]


@contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed torch's default CPU generator, numpy's global generator and `random` from `seed`
    inside the block, and restore their previous states after it."""
    torch_state = torch.get_rng_state()
    numpy_state = np.random.get_state()
    random_state = random.getstate()
    try:
        torch.default_generator.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(random_state)


class SeededSampler(Sampler[tuple[int, int]]):
    """Wrap an index sampler to yield (index, sample_seed), sample_seed = f(seed, epoch, position).

    A wrapped sampler with `set_epoch` (ShuffleSampler, RepeatFactorSampler) is kept on the
    same epoch. `len()` is the wrapped sampler's length for the current epoch.
    """

    def __init__(self, sampler: Iterable[int], seed: int):
        if not isinstance(sampler, Sized):
            raise TypeError(f"sampler must have a length, got {type(sampler).__name__}")
        self.sampler = sampler
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        for position, index in enumerate(self.sampler):
            yield int(index), derive_seed(self.seed, epoch, position)
        self.set_epoch(epoch + 1)  # reached only when the pass completes

    def __len__(self) -> int:
        return len(self.sampler)


class SeededDataset(Dataset):
    """dataset[(index, sample_seed)] = dataset[index] with the global generators seeded from
    sample_seed (see `seeded_global_rngs`)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Instances]:
        index, sample_seed = key
        with seeded_global_rngs(sample_seed):
            return self.dataset[index]


class InstanceLoader(DataLoader):
    """A DataLoader over a SeededDataset; made by `build_loader`."""

    source_dataset: Dataset  # the dataset passed to build_loader

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch `epoch` (order and augmentation), e.g. when resuming."""
        self.sampler.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        """The epoch the next (or current) pass produces."""
        return self.sampler.epoch


def build_loader(
    dataset: InstanceDataset | Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int,
    sampler: Sampler[int] | None = None,
    drop_last: bool = False,
    persistent_workers: bool | None = None,
    pin_memory: bool = False,
) -> InstanceLoader:
    """A loader yielding (list of uint8 images [3, H, W], list of Instances) batches.

    Order and augmentation depend only on (seed, epoch), whatever num_workers is. With
    `sampler` (e.g. RepeatFactorSampler), it decides the order and shuffle must be False.
    persistent_workers defaults to num_workers > 0.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if sampler is not None and shuffle:
        raise ValueError("pass shuffle=False with a sampler: the sampler decides the order")
    if persistent_workers is None:
        persistent_workers = num_workers > 0
    elif persistent_workers and num_workers == 0:
        raise ValueError("persistent_workers=True needs num_workers > 0")
    if sampler is None:
        sampler = ShuffleSampler(len(dataset), seed=seed) if shuffle else SequentialSampler(dataset)
    source = dataset
    loader = InstanceLoader(
        SeededDataset(dataset),
        batch_size=batch_size,
        sampler=SeededSampler(sampler, seed),
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=drop_last,
        persistent_workers=persistent_workers,
        pin_memory=pin_memory,
        # the loader draws worker base seeds from this; without it, from the caller's global RNG
        generator=torch.Generator().manual_seed(derive_seed(seed)),
    )
    loader.source_dataset = source
    return loader
