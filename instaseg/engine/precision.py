"""Mixed precision: the autocast context and, for fp16, the gradient scaler."""

from __future__ import annotations

import contextlib

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str | None, device: torch.device) -> None:
    """Raise ValueError unless `amp` is None, "bf16", or "fp16" on a CUDA device."""
    if amp is None:
        return
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be None or one of {tuple(AMP_DTYPES)}, got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"amp='fp16' needs a CUDA device, got {device}; use amp='bf16' here")


def autocast(amp: str | None, device: torch.device) -> contextlib.AbstractContextManager:
    """torch.autocast in `amp`'s dtype on `device`, or a no-op context when amp is None."""
    check_amp(amp, device)
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def make_grad_scaler(amp: str | None, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (whose small range underflows gradients); None otherwise, as
    bf16 has float32's exponent range."""
    check_amp(amp, device)
    return torch.amp.GradScaler(device.type) if amp == "fp16" else None
