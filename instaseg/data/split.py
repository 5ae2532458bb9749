"""Deterministic train/val split.

Each image is ranked by a hash of (seed, file_name), and the lowest-ranked fraction goes to
val. The split depends only on the names and the seed, not on the order the reader listed
them, and growing a dataset moves few existing images between splits.
"""

from __future__ import annotations

import hashlib

from instaseg.data.dataset import InstanceDataset


def split_indices(
    file_names: list[str], val_fraction: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """(train indices, val indices), each sorted; val gets round(n * val_fraction) images."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(set(file_names)) != len(file_names):
        raise ValueError("file names must be unique to split deterministically")
    ranked = sorted(range(len(file_names)), key=lambda i: _rank(seed, file_names[i]))
    num_val = round(len(file_names) * val_fraction)
    if len(file_names) >= 2:
        num_val = min(max(num_val, 1), len(file_names) - 1)  # neither split may be empty
    return sorted(ranked[num_val:]), sorted(ranked[:num_val])


def split_dataset(
    dataset: InstanceDataset, val_fraction: float, seed: int = 0
) -> tuple[InstanceDataset, InstanceDataset]:
    """Split a dataset into (train, val) views over the same image root."""
    train, val = split_indices([r.file_name for r in dataset.records], val_fraction, seed)
    return dataset.subset(train), dataset.subset(val)


def _rank(seed: int, file_name: str) -> str:
    return hashlib.sha256(f"{seed}:{file_name}".encode()).hexdigest()
