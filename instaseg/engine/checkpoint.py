"""Weights files and resumable training state.

Weights: `X.safetensors` holds a model's state dict; `X.json` beside it holds the metadata
(classes, category ids, model name and kwargs, image size, epoch, metrics, versions). The same
metadata is embedded as json in the safetensors header (key "instaseg"), so the .safetensors
file alone is enough to rebuild and label a model. Tensors that share memory (tied weights)
are stored once; the header key "instaseg_aliases" maps each dropped name to the stored one,
and `load_weights` puts the dropped names back, so the state dict it returns loads with
`strict=True`.

Training state: `X.state.pt`, a `torch.save` file read with `weights_only=True`, so it may
hold only tensors and plain Python values (see `instaseg.engine.rng` for the RNG states).

Every file is written to a temporary name and renamed into place, so an interrupted save
never leaves a half-written checkpoint where a good one was.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

import instaseg

FORMAT_VERSION = 1
WEIGHTS_SUFFIX = ".safetensors"
METADATA_SUFFIX = ".json"
STATE_SUFFIX = ".state.pt"
_METADATA_KEY = "instaseg"
_ALIASES_KEY = "instaseg_aliases"


def checkpoint_stem(path: str | Path) -> Path:
    """`runs/x/best`, `runs/x/best.safetensors`, `.json` or `.state.pt` -> `runs/x/best`."""
    path = Path(path)
    for suffix in (WEIGHTS_SUFFIX, METADATA_SUFFIX, STATE_SUFFIX):
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.with_name(path.name[: -len(suffix)])
    return path


def _with_suffix(stem: Path, suffix: str) -> Path:
    return stem.with_name(stem.name + suffix)  # not with_suffix: stems may contain dots


def save_weights(
    path: str | Path, model: nn.Module | Mapping[str, Tensor], metadata: Mapping[str, Any]
) -> Path:
    """Write `X.safetensors` and `X.json` for the stem of `path`; returns the .safetensors path.

    `model` is a module or its state dict. `metadata` must be json-serialisable; the format
    version and the instaseg and torch versions are added. Raises ValueError, writing
    nothing, when a floating-point tensor holds NaN or inf.
    """
    stem = checkpoint_stem(path)
    weights_path = _with_suffix(stem, WEIGHTS_SUFFIX)
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    check_finite(state, f"weights for {weights_path}")
    tensors, aliases = _store_shared_once(state)
    full_metadata = {
        **metadata,
        "format_version": FORMAT_VERSION,
        "versions": {"instaseg": instaseg.__version__, "torch": torch.__version__},
    }
    text = metadata_json(full_metadata)
    header = {"format": "pt", _METADATA_KEY: text, _ALIASES_KEY: json.dumps(aliases)}
    stem.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(weights_path, lambda tmp: save_file(tensors, tmp, metadata=header))
    metadata_path = _with_suffix(stem, METADATA_SUFFIX)
    _write_atomically(metadata_path, lambda tmp: tmp.write_text(text + "\n"))
    return weights_path


def load_weights(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state dict on the CPU, metadata) from `X.safetensors` (path may be the stem).

    Metadata comes from the safetensors header, or from `X.json` when the header has none
    (a file not written by `save_weights` without a json beside it gives {}). Raises
    FileNotFoundError or ValueError naming the file when it is missing or unreadable.
    """
    weights_path = _with_suffix(checkpoint_stem(path), WEIGHTS_SUFFIX)
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: weights file not found")
    try:
        with safe_open(weights_path, framework="pt", device="cpu") as reader:
            header = reader.metadata() or {}
            state = {name: reader.get_tensor(name) for name in reader.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"{weights_path}: not a readable safetensors file ({error}); it may be truncated "
            "or not a weights file"
        ) from None
    metadata = _read_metadata(weights_path, header)
    aliases = _parse_json(header.get(_ALIASES_KEY, "{}"), weights_path, "header aliases")
    for alias, stored in aliases.items():
        if stored not in state:
            raise ValueError(f"{weights_path}: alias '{alias}' points to missing '{stored}'")
        state[alias] = state[stored]
    return state, metadata


def save_training_state(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write `X.state.pt` for the stem of `path`; returns its path. `state` must hold only
    tensors and plain Python values (it is read back with weights_only=True)."""
    state_path = _with_suffix(checkpoint_stem(path), STATE_SUFFIX)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**state, "format_version": FORMAT_VERSION}
    _write_atomically(state_path, lambda tmp: torch.save(payload, tmp))
    return state_path


def load_training_state(path: str | Path) -> dict[str, Any]:
    """The dict `save_training_state` wrote to `X.state.pt` (path may be the stem), on the CPU.
    Raises FileNotFoundError or ValueError naming the file when it is missing or unreadable."""
    state_path = _with_suffix(checkpoint_stem(path), STATE_SUFFIX)
    if not state_path.is_file():
        raise FileNotFoundError(f"{state_path}: training state file not found")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except (RuntimeError, KeyError, EOFError, ValueError, pickle.UnpicklingError) as error:
        raise ValueError(
            f"{state_path}: not a readable training state ({error}); it may be truncated"
        ) from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{state_path}: not an instaseg training state of format version {FORMAT_VERSION}"
        )
    return state


def check_finite(state: Mapping[str, Tensor], what: str) -> None:
    """Raise ValueError naming the tensors of `state` that hold NaN or inf."""
    bad = [
        name
        for name, tensor in state.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"{what}: non-finite values (NaN or inf) in {shown}; not saved")


def metadata_json(metadata: Mapping[str, Any]) -> str:
    """`metadata` as json text; raises TypeError naming the first top-level key that is not
    json-serialisable (NaN and inf count as not serialisable)."""
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be strings, got {key!r}")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"metadata['{key}'] is not json-serialisable ({error}); store plain values"
            ) from None
    return json.dumps(dict(metadata), indent=2, allow_nan=False)


def _store_shared_once(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """CPU tensors safetensors accepts (contiguous, no two sharing memory) and the aliases
    {dropped name: stored name} of tensors identical to an earlier one (tied weights)."""
    first_name: dict[tuple, str] = {}
    aliases: dict[str, str] = {}
    kept: dict[str, Tensor] = {}
    for name, tensor in state.items():
        identity = (
            tensor.device,
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.stride(),
            tensor.dtype,
        )
        if identity in first_name and tensor.numel() > 0:
            aliases[name] = first_name[identity]
        else:
            first_name.setdefault(identity, name)
            kept[name] = tensor.detach()
    storage_users: dict[tuple, int] = {}
    for tensor in kept.values():
        key = (tensor.device, tensor.untyped_storage().data_ptr())
        storage_users[key] = storage_users.get(key, 0) + 1
    tensors = {}
    for name, tensor in kept.items():
        shares = storage_users[(tensor.device, tensor.untyped_storage().data_ptr())] > 1
        tensor = tensor.cpu()
        tensors[name] = (
            tensor.clone(memory_format=torch.contiguous_format) if shares else tensor.contiguous()
        )
    return tensors, aliases


def _read_metadata(weights_path: Path, header: Mapping[str, str]) -> dict[str, Any]:
    if _METADATA_KEY in header:
        return _parse_json(header[_METADATA_KEY], weights_path, "header metadata")
    metadata_path = _with_suffix(checkpoint_stem(weights_path), METADATA_SUFFIX)
    if metadata_path.is_file():
        return _parse_json(metadata_path.read_text(), metadata_path, "metadata")
    return {}


def _parse_json(text: str, source: Path, what: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}: {what} is not valid json ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{source}: {what} must be a json object, got {type(value).__name__}")
    return value


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
