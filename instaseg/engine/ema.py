"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """A copy of `model` whose floating-point parameters and buffers follow an exponential
    moving average of the model's:

        ema = d * ema + (1 - d) * current,   d = decay * (1 - exp(-updates / ramp_updates))

    The ramp keeps d small for the first few thousand updates, so the average is not
    dominated by the random initial weights; with ramp_updates=0, d = decay from the start.
    Integer buffers (e.g. BatchNorm's num_batches_tracked) are copied. The copy is in eval
    mode, needs no gradients, and lives on the model's device; `module` is what validation
    and the saved weights use.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, ramp_updates: float = 2000.0):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if ramp_updates < 0:
            raise ValueError(f"ramp_updates must be >= 0, got {ramp_updates}")
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self.decay = decay
        self.ramp_updates = ramp_updates
        self.updates = 0

    def current_decay(self) -> float:
        """d for the next update."""
        if self.ramp_updates == 0:
            return self.decay
        return self.decay * (1 - math.exp(-(self.updates + 1) / self.ramp_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards `model`'s current weights."""
        weight = 1 - self.current_decay()
        self.updates += 1
        for averaged, current in _paired_tensors(self.module, model):
            if averaged.is_floating_point():
                averaged.lerp_(current.detach().to(averaged.dtype), weight)
            else:
                averaged.copy_(current)

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "ramp_updates": self.ramp_updates,
            "updates": self.updates,
            "module": self.module.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.ramp_updates = float(state["ramp_updates"])
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["module"])


def _paired_tensors(averaged: nn.Module, current: nn.Module) -> list[tuple[torch.Tensor, ...]]:
    """(average, current) for every parameter and buffer, each shared tensor once."""
    pairs = []
    for mine, theirs in (
        (averaged.named_parameters(), current.named_parameters()),
        (averaged.named_buffers(), current.named_buffers()),
    ):
        theirs = dict(theirs)
        for name, tensor in mine:
            if name not in theirs:
                raise ValueError(f"the model has no '{name}' but its EMA copy has; rebuild the EMA")
            pairs.append((tensor, theirs[name]))
    return pairs
