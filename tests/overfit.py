"""What the overfit tests of every model family share: four small synthetic images, and a
training loop that fits a model to them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from instaseg.data.config import load_data_config
from instaseg.data.synth import generate_synthetic
from instaseg.structures import Instances


def four_synthetic_images(tmp_path: Path) -> tuple[list[torch.Tensor], list[Instances]]:
    """Four synthetic 128 px images (at most 4 objects each, seed 0) and their instances."""
    data_yaml = generate_synthetic(
        tmp_path / "data", num_train=4, num_val=1, seed=0, image_size=(128, 128), max_objects=4
    )
    dataset = load_data_config(data_yaml).dataset("train")
    images, targets = zip(*(dataset[i] for i in range(4)), strict=True)
    return list(images), list(targets)


def fit(
    model: nn.Module,
    images: list[torch.Tensor],
    targets: list[Instances],
    *,
    steps: int,
    lr: float,
    factor: Callable[[int], float],
) -> None:
    """`steps` AdamW steps (weight decay 1e-4) on the one batch, at lr x factor(step); the
    model is left in train mode."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model.train()
    for _ in range(steps):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
