"""Capture and restore the global random generators, in a form `torch.load(weights_only=True)`
accepts: tensors, lists, ints, floats and strings only."""

from __future__ import annotations

import random

import numpy as np
import torch


def capture_rng_state() -> dict:
    """The states of torch's CPU and CUDA generators, numpy's global generator and `random`."""
    version, internal, gauss_next = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(kind),
            "keys": [int(k) for k in keys],
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def restore_rng_state(state: dict) -> None:
    """Put back what `capture_rng_state` returned. CUDA states are restored when CUDA is
    available and the saved run had the same number of devices."""
    torch.set_rng_state(state["torch"])
    cuda_states = state["cuda"]
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) != torch.cuda.device_count():
            raise ValueError(
                f"the saved run had {len(cuda_states)} CUDA devices, this one has "
                f"{torch.cuda.device_count()}; resume with the same devices visible"
            )
        torch.cuda.set_rng_state_all(cuda_states)
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            np.array(numpy_state["keys"], dtype=np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate(
        (python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"])
    )
