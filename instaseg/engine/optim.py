"""Optimizer construction and the learning-rate schedule.

The schedule is a function of *training progress* p in [0, 1] (the fraction of the planned
steps done, or of the time budget spent) times a linear warmup counted in steps:

    lr(p, step) = base_lr * warmup(step) * decay(p)

so one schedule fits a run measured in epochs and one measured in wall time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step")

# Modules whose affine weights are scales and shifts of normalised activations: decaying them
# towards zero fights the normalisation instead of regularising the model.
_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),  # torch >= 2.4
)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into a decayed group and a group without weight decay
    (biases and the weights of normalisation layers). Shared parameters appear once; empty
    groups are left out."""
    decayed, not_decayed = [], []
    seen: set[int] = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            if name == "bias" or isinstance(module, _NORM_TYPES):
                not_decayed.append(parameter)
            else:
                decayed.append(parameter)
    groups = [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": not_decayed, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(
    model: nn.Module,
    name: str = "sgd",
    *,
    lr: float,
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """SGD (with `momentum`, Nesterov off) or AdamW (with `betas`) over the model's trainable
    parameters; no weight decay on biases and normalisation weights (see `parameter_groups`)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {OPTIMIZERS}, got {name!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    groups = parameter_groups(model, weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


class LRSchedule:
    """Linear warmup over `warmup_steps`, then cosine or step decay over progress in [0, 1].

    kind="cosine": decay(p) = final_factor + (1 - final_factor) * (1 + cos(pi * p)) / 2, so
        the rate falls from base_lr to final_factor * base_lr at p = 1.
    kind="step": decay(p) = gamma ** (number of milestones <= p); milestones are fractions of
        the run, e.g. (0.67, 0.89) drops the rate 10x at 67 % and again at 89 %.
    warmup(step) rises linearly from warmup_factor at step 0 to 1 at step warmup_steps.

    Each param group keeps its own base rate, read from the optimizer when the schedule is
    made. Call `update(progress, step)` before each optimizer step.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        kind: str = "cosine",
        *,
        warmup_steps: int = 0,
        warmup_factor: float = 0.001,
        final_factor: float = 0.01,
        milestones: Sequence[float] = (0.67, 0.89),
        gamma: float = 0.1,
    ):
        if kind not in SCHEDULES:
            raise ValueError(f"schedule kind must be one of {SCHEDULES}, got {kind!r}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if not 0 < warmup_factor <= 1:
            raise ValueError(f"warmup_factor must be in (0, 1], got {warmup_factor}")
        if not 0 <= final_factor <= 1:
            raise ValueError(f"final_factor must be in [0, 1], got {final_factor}")
        if any(not 0 < m < 1 for m in milestones) or list(milestones) != sorted(milestones):
            raise ValueError(
                f"milestones must be increasing fractions in (0, 1), got {list(milestones)}"
            )
        self.optimizer = optimizer
        self.kind = kind
        self.warmup_steps = warmup_steps
        self.warmup_factor = warmup_factor
        self.final_factor = final_factor
        self.milestones = tuple(float(m) for m in milestones)
        self.gamma = gamma
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.last_progress = 0.0
        self.last_step = 0

    def factor(self, progress: float, step: int) -> float:
        """The multiplier of every base rate at `progress` (clamped to [0, 1]) and `step`."""
        progress = min(max(float(progress), 0.0), 1.0)
        if self.kind == "cosine":
            decay = self.final_factor + (1 - self.final_factor) * 0.5 * (
                1 + math.cos(math.pi * progress)
            )
        else:
            decay = self.gamma ** sum(progress >= m for m in self.milestones)
        if step < self.warmup_steps:
            fraction = step / self.warmup_steps
            decay *= self.warmup_factor + (1 - self.warmup_factor) * fraction
        return decay

    def update(self, progress: float, step: int) -> float:
        """Set each group's rate for `progress` and `step`; returns the first group's rate."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        factor = self.factor(progress, step)
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base_lr * factor
        self.last_progress, self.last_step = float(progress), int(step)
        return self.base_lrs[0] * factor

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "warmup_steps": self.warmup_steps,
            "warmup_factor": self.warmup_factor,
            "final_factor": self.final_factor,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
            "base_lrs": list(self.base_lrs),
            "last_progress": self.last_progress,
            "last_step": self.last_step,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore base rates and the last position; the shape of the schedule (kind,
        warmup, milestones) must match the one this object was built with."""
        for key in ("kind", "warmup_steps", "warmup_factor", "final_factor", "gamma"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"schedule {key} is {getattr(self, key)!r} but the saved schedule has "
                    f"{state[key]!r}; build the schedule as the interrupted run did"
                )
        if tuple(state["milestones"]) != self.milestones:
            raise ValueError(
                f"schedule milestones are {list(self.milestones)} but the saved schedule has "
                f"{state['milestones']}"
            )
        if len(state["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"the saved schedule has {len(state['base_lrs'])} param groups, the optimizer "
                f"{len(self.optimizer.param_groups)}"
            )
        self.base_lrs = [float(lr) for lr in state["base_lrs"]]
        self.last_progress = float(state["last_progress"])
        self.last_step = int(state["last_step"])
