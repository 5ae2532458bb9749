"""The run's metrics: one json object per line in metrics.jsonl, optionally mirrored to
TensorBoard.

Records carry a "kind": "train" (means over the last `log_every` steps: each loss_* term,
total_loss, lr, step_time_s, images_per_s) or "epoch" ("train": the epoch's mean losses; when it
was validated, "val": {iou type: {"AP", "AP50", ...}}). Every record has "epoch" (the epoch it
belongs to, counted from 1) and "step" (the global step count when it was written).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def read_metrics(path: str | Path) -> list[dict]:
    """Every record of a metrics.jsonl file, in order; [] when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLog:
    """Appends records to `path` (a .jsonl file) and, when `tensorboard_dir` is given and
    `torch.utils.tensorboard` imports, writes their numbers there as scalars."""

    def __init__(self, path: str | Path, *, tensorboard_dir: str | Path | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = _tensorboard_writer(tensorboard_dir) if tensorboard_dir else None

    def start(self) -> None:
        """Begin an empty log; raises FileExistsError when the file holds a run already."""
        if self.path.is_file() and self.path.stat().st_size > 0:
            raise FileExistsError(
                f"{self.path} already holds a training run; resume it or choose another out_dir"
            )
        self.path.write_text("")

    def rewind(self, step: int) -> None:
        """Drop records written after global step `step` (from a run interrupted after the
        checkpoint it resumes from), so the log continues exactly where that checkpoint was."""
        kept = [record for record in read_metrics(self.path) if record["step"] <= step]
        self.path.write_text("".join(json.dumps(record) + "\n" for record in kept))

    def append(self, record: Mapping[str, Any]) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for tag, value in _scalars(record):
                self._writer.add_scalar(f"{record['kind']}/{tag}", value, record["step"])

    def records(self) -> list[dict]:
        return read_metrics(self.path)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class RunningMeans:
    """Means of named floats over the values added since the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self._sums: dict[str, float] = {}

    def add(self, values: Mapping[str, float]) -> None:
        self.count += 1
        for name, value in values.items():
            self._sums[name] = self._sums.get(name, 0.0) + value

    def means(self) -> dict[str, float]:
        return {name: total / self.count for name, total in self._sums.items()}


def _tensorboard_writer(log_dir: str | Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        warnings.warn(
            f"TensorBoard logging is off: torch.utils.tensorboard does not import ({error}); "
            "`pip install tensorboard` to enable it",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return SummaryWriter(log_dir=str(log_dir))


def _scalars(record: Mapping[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """(tag, value) for every number in a record, nested dicts joined with '/'."""
    scalars = []
    for key, value in record.items():
        if key in ("kind", "step"):
            continue
        if isinstance(value, Mapping):
            scalars += _scalars(value, f"{prefix}{key}/")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            scalars.append((f"{prefix}{key}", float(value)))
    return scalars
