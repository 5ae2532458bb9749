"""What differs between a checkpoint's state dict and a model's, for load errors that name the
tensors instead of torch's list of every one."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from instaseg.models.norm import FrozenBatchNorm2d


@dataclass
class StateDictDifferences:
    """Keys of the model missing from the state dict, keys of the state dict the model lacks,
    and "key (state shape) (model: (model shape))" for each tensor whose shapes differ."""

    missing: list[str]
    unexpected: list[str]
    reshaped: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.reshaped)


def state_dict_differences(
    model: nn.Module, state: Mapping[str, object], *, optional: Collection[str] = ()
) -> StateDictDifferences:
    """Compare `state` with model.state_dict(), as a strict load_state_dict would, except for
    what loading fills in or drops itself: a BatchNorm step counter missing from the state
    (BatchNorm sets it), one present for a FrozenBatchNorm2d (which drops it), and the
    `optional` keys (the model keeps its own values). TypeError if a value is not a tensor."""
    not_tensors = [key for key, value in state.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise TypeError(
            f"weights must map names to tensors, but {preview(not_tensors)} are not tensors; "
            "for a training checkpoint, pass its model state dict"
        )
    expected = model.state_dict()
    dropped = {
        f"{name}.num_batches_tracked"
        for name, module in model.named_modules()
        if isinstance(module, FrozenBatchNorm2d)
    }
    missing = [
        key
        for key in expected
        if key not in state and not key.endswith(".num_batches_tracked") and key not in optional
    ]
    unexpected = [key for key in state if key not in expected and key not in dropped]
    reshaped = [
        f"{key} {tuple(state[key].shape)} (model: {tuple(value.shape)})"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    return StateDictDifferences(missing, unexpected, reshaped)


def preview(keys: list[str], limit: int = 5) -> str:
    """The first `limit` keys, comma-separated, and how many more there are."""
    more = f", ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
