"""Index samplers whose order depends only on (seed, epoch), never on global random state.

- `ShuffleSampler`: a fresh permutation of the dataset per epoch.
- `RepeatFactorSampler`: LVIS repeat-factor sampling for long-tailed data (Gupta et al., 2019):
  images holding rare classes are repeated within an epoch.

Both have `set_epoch(epoch)`; the same (seed, epoch) always gives the same indices, so a run
resumed at epoch k sees exactly the data it would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from instaseg.data.dataset import InstanceDataset


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The random generator of one epoch."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch]))


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from non-negative integer keys, e.g. (seed, epoch).

    numpy's SeedSequence hashes the keys, so neighbouring keys such as (seed, epoch) and
    (seed, epoch + 1) give unrelated random streams (unlike seed + epoch).
    """
    for position, key in enumerate(keys):
        if int(key) < 0:
            raise ValueError(
                f"seed keys must be non-negative integers, got {key} at position {position}"
            )
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1


def _check_seed(seed: int) -> int:
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return seed


class ShuffleSampler(Sampler[int]):
    """A random permutation of range(num_samples), drawn from (seed, epoch)."""

    def __init__(self, num_samples: int, *, seed: int = 0):
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self.num_samples = num_samples
        self.seed = _check_seed(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        yield from epoch_rng(self.seed, self.epoch).permutation(self.num_samples).tolist()

    def __len__(self) -> int:
        return self.num_samples


def image_class_sets(dataset: InstanceDataset) -> list[set[int]]:
    """The labels of each image's non-crowd annotations, read from the records (masks are
    never decoded). Crowd regions are not trained as positives, so they do not count."""
    return [{a.label for a in record.annotations if not a.iscrowd} for record in dataset.records]


def repeat_factors(image_classes: Sequence[Collection[int]], threshold: float) -> np.ndarray:
    """Per-image repeat factors, float64 [num_images].

    For class c, f(c) is the fraction of all images (negatives included) that contain c and
    r(c) = max(1, sqrt(threshold / f(c))). An image's factor is the largest r(c) over its
    classes, and 1 for an image without classes.
    """
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    num_images = len(image_classes)
    images_per_class: dict[int, int] = {}
    for classes in image_classes:
        for label in set(classes):
            images_per_class[label] = images_per_class.get(label, 0) + 1
    class_factor = {
        label: max(1.0, math.sqrt(threshold / (count / num_images)))
        for label, count in images_per_class.items()
    }
    factors = [max((class_factor[c] for c in classes), default=1.0) for classes in image_classes]
    return np.array(factors, dtype=np.float64)


class RepeatFactorSampler(Sampler[int]):
    """Repeat-factor sampling (LVIS): image i appears about r_i times per epoch.

    A fractional factor is rounded stochastically each epoch (r = 2.3 gives 2 copies with
    probability 0.7 and 3 with 0.3), so the expected epoch length is sum(r_i) and the actual
    length varies with the epoch; `len()` is the length of the current epoch. The rounding and
    the shuffle are drawn from (seed, epoch). threshold is t in r(c) = max(1, sqrt(t / f(c))):
    classes in fewer than a fraction t of the images get repeated; LVIS uses 0.001.
    """

    def __init__(
        self,
        dataset: InstanceDataset,
        *,
        threshold: float = 0.001,
        seed: int = 0,
        shuffle: bool = True,
    ):
        self.factors = repeat_factors(image_class_sets(dataset), threshold)
        self.threshold = threshold
        self.seed = _check_seed(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self._indices: list[int] | None = None

    @property
    def expected_length(self) -> float:
        """Mean number of indices per epoch: the sum of the repeat factors."""
        return float(self.factors.sum())

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self._indices = None

    def __iter__(self) -> Iterator[int]:
        yield from self._epoch_indices()

    def __len__(self) -> int:
        return len(self._epoch_indices())

    def _epoch_indices(self) -> list[int]:
        if self._indices is None:
            rng = epoch_rng(self.seed, self.epoch)
            whole = np.floor(self.factors)
            repeats = whole + (rng.random(len(self.factors)) < self.factors - whole)
            indices = np.repeat(np.arange(len(self.factors)), repeats.astype(np.int64))
            if self.shuffle:
                indices = rng.permutation(indices)
            self._indices = indices.tolist()
        return self._indices
