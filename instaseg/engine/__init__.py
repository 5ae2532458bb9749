"""Training: the loop, optimizers and schedule, weight averaging, checkpoints, validation.

- `Trainer`: trains a model on a loader with an optimizer; writes checkpoints, metrics.jsonl
  and curves.png; resumes at epoch boundaries.
- `build_optimizer`, `LRSchedule`: SGD/AdamW without decay on norms and biases; warmup then
  cosine or step decay over training progress.
- `ModelEMA`: exponential moving average of the weights.
- `save_weights`, `load_weights`: safetensors weights with json metadata.
- `predict_loader`, `validate`: a model's predictions over a loader, and their COCO metrics.
"""

from instaseg.engine.checkpoint import (
    load_training_state,
    load_weights,
    save_training_state,
    save_weights,
)
from instaseg.engine.curves import plot_training_curves
from instaseg.engine.ema import ModelEMA
from instaseg.engine.metrics_log import read_metrics
from instaseg.engine.optim import LRSchedule, build_optimizer, parameter_groups
from instaseg.engine.trainer import Trainer, TrainingCounters, TrainingDivergedError
from instaseg.engine.validation import predict_loader, validate

__all__ = [
    "LRSchedule",
    "ModelEMA",
    "Trainer",
    "TrainingCounters",
    "TrainingDivergedError",
    "build_optimizer",
    "load_training_state",
    "load_weights",
    "parameter_groups",
    "plot_training_curves",
    "predict_loader",
    "read_metrics",
    "save_training_state",
    "save_weights",
    "validate",
]
