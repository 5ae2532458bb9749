"""The training loop: a model, a loader and an optimizer in; checkpoints, metrics and curves out.

Files under out_dir:
    metrics.jsonl      one json record per `log_every` steps and per epoch (metrics_log.py)
    last.safetensors   weights after the latest epoch (the EMA's when enabled) + last.json
    last.state.pt      what `resume` needs: raw model weights, optimizer, schedule, EMA,
                       grad scaler, counters, RNG states
    best.safetensors   weights of the epoch with the highest validation mask AP + best.json
    curves.png         losses, learning rate and validation AP
    tensorboard/       when tensorboard=True and TensorBoard is installed

Resume granularity: epoch boundaries. `last.state.pt` is written after every epoch (after
its validation), so an interrupted run resumes at the start of the epoch it was in. With the
same seeds, loaders and deterministic settings (`torch.use_deterministic_algorithms(True)`,
num_workers any, see instaseg.data.loader), a resumed epoch-based run ends with bitwise the
same weights as an uninterrupted one. A time-budget run resumes with its elapsed training time,
but since its schedule follows the wall clock it is not bitwise reproducible.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from instaseg.engine.checkpoint import (
    WEIGHTS_SUFFIX,
    check_finite,
    load_training_state,
    metadata_json,
    save_training_state,
    save_weights,
)
from instaseg.engine.curves import plot_training_curves
from instaseg.engine.ema import ModelEMA
from instaseg.engine.metrics_log import MetricsLog, RunningMeans
from instaseg.engine.optim import LRSchedule
from instaseg.engine.precision import autocast, check_amp, make_grad_scaler
from instaseg.engine.rng import capture_rng_state, restore_rng_state
from instaseg.engine.validation import validate
from instaseg.structures import Instances

logger = logging.getLogger(__name__)

TRACKED_METRIC = ("segm", "AP")  # mask AP decides which checkpoint is `best`
TRAINER_METADATA_KEYS = ("classes", "category_ids", "epoch", "step", "metrics", "ema")

Batch = tuple[list[Tensor], list[Instances]]


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became NaN or inf; the latest checkpoint was left as it was."""


@dataclass
class TrainingCounters:
    """Where a run stands; saved in the training state and restored by `resume`."""

    epoch: int = 0  # epochs trained; a time budget's last, cut-short epoch counts
    global_step: int = 0
    elapsed_s: float = 0.0  # training time: steps and data loading, not validation or saving
    images_seen: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    last_metrics: dict | None = None  # the latest validation's EvalResult.metrics


class Trainer:
    """Trains `model` on `train_loader` with `optimizer` and `schedule`.

    Exactly one of `epochs` and `time_budget_s` sets the run's length. With epochs, progress
    (what the schedule follows) is the fraction of epochs done; with a time budget it is
    elapsed training time / budget, and the run stops after the step that spends the budget,
    then validates and saves. Validation (over `val_loader`, which must yield images and
    targets in their original frame) runs every `val_every` epochs and after the last one; its
    mask AP picks `best`. `metadata` (model name and kwargs, image size, ...) goes into every
    weights file beside the classes, epoch and metrics, which the trainer sets itself.

    amp: None, "bf16" (CPU or CUDA) or "fp16" (CUDA; adds a GradScaler). grad_clip: max global
    gradient norm. ema_decay: keep a `ModelEMA`, which is then validated and saved. The model
    is moved to `device`; build the optimizer before or after, but before it has state.
    Determinism (torch.use_deterministic_algorithms) is the caller's choice, as it is global.
    """

    def __init__(
        self,
        model: nn.Module,
        train_loader: Iterable[Batch],
        optimizer: torch.optim.Optimizer,
        *,
        schedule: LRSchedule,
        out_dir: str | Path,
        class_names: Sequence[str],
        metadata: Mapping[str, Any],
        epochs: int | None = None,
        time_budget_s: float | None = None,
        val_loader: Iterable[Batch] | None = None,
        val_every: int = 1,
        category_ids: Sequence[int] | None = None,
        amp: str | None = None,
        grad_clip: float | None = None,
        ema_decay: float | None = None,
        device: str | torch.device = "cpu",
        log_every: int = 20,
        tensorboard: bool = False,
        progress_bar: bool = True,
        resume_from: str | Path | None = None,
    ):
        self.device = torch.device(device)
        _check_run_length(epochs, time_budget_s)
        _check_options(val_every, log_every, grad_clip, ema_decay)
        check_amp(amp, self.device)
        self.class_names, self.category_ids = _check_classes(class_names, category_ids)
        self.metadata = _check_metadata(metadata)
        if schedule.optimizer is not optimizer:
            raise ValueError("schedule was built for another optimizer; pass the same one")
        self.model = model.to(self.device)
        self.train_loader, self.val_loader = train_loader, val_loader
        self.optimizer, self.schedule = optimizer, schedule
        self.out_dir = Path(out_dir)
        self.epochs, self.time_budget_s = epochs, time_budget_s
        self.val_every, self.log_every = val_every, log_every
        self.amp, self.grad_clip = amp, grad_clip
        self.tensorboard, self.progress_bar = tensorboard, progress_bar
        self.ema = ModelEMA(self.model, ema_decay) if ema_decay is not None else None
        self.scaler = make_grad_scaler(amp, self.device)
        self.counters = TrainingCounters()
        self._rng_to_restore: dict | None = None
        self._resumed = False
        if resume_from is not None:
            self.resume(resume_from)

    @property
    def global_step(self) -> int:
        return self.counters.global_step

    def resume(self, path: str | Path) -> None:
        """Load a training state (`out_dir/last`, or its `.state.pt` path) into this trainer;
        `fit` then continues from the epoch after the saved one. Build the model, optimizer,
        schedule, EMA setting and loaders as the interrupted run did."""
        state = load_training_state(path)
        if (state["ema"] is None) != (self.ema is None):
            saved = "with" if state["ema"] is not None else "without"
            raise ValueError(
                f"{path}: the run was trained {saved} EMA; pass the same ema_decay to resume it"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.counters = TrainingCounters(**state["counters"])
        self._rng_to_restore = state["rng"]
        self._resumed = True
        logger.info(
            "resuming from %s after epoch %d (step %d)",
            path,
            self.counters.epoch,
            self.counters.global_step,
        )

    def fit(self) -> dict[str, Any]:
        """Train to the end of the run and return a summary: stopped_by ("epochs" or
        "time_budget"), epochs, steps, elapsed_s, progress (1.0 or more when complete),
        train_images, train_images_per_s (this call's), final_metrics (the last validation's
        {iou type: {"AP", ...}}), best_metric (mask AP) and best_epoch, and the paths of
        best, last, metrics.jsonl and curves.png (best_path None when none was saved).

        Raises TrainingDivergedError when a loss or the weights become non-finite; the
        checkpoints of the last good epoch stay as they were.
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        log = self._open_log()
        if self._rng_to_restore is not None:
            restore_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        run_start = (self.counters.elapsed_s, self.counters.images_seen)
        try:
            if self._finished():
                logger.info("nothing to train: the run in %s is complete", self.out_dir)
            while not self._finished():
                epoch_losses = self._train_epoch(log)
                self.counters.epoch += 1
                self._end_epoch(log, epoch_losses)
        finally:
            log.close()
            plot_training_curves(log.records(), self.out_dir / "curves.png")
        return self._summary(run_start)

    def _summary(self, run_start: tuple[float, int]) -> dict[str, Any]:
        """The run's totals, validation results and output paths; train_images_per_s counts
        the images and training time of this `fit` call, from run_start = (elapsed_s,
        images_seen) at its start."""
        counters = self.counters
        run_seconds = counters.elapsed_s - run_start[0]
        run_images = counters.images_seen - run_start[1]
        return {
            "stopped_by": "epochs" if self.epochs is not None else "time_budget",
            "epochs": counters.epoch,
            "steps": counters.global_step,
            "elapsed_s": counters.elapsed_s,
            "progress": self._run_progress(),
            "train_images": counters.images_seen,
            "train_images_per_s": run_images / run_seconds if run_seconds > 0 else None,
            "final_metrics": counters.last_metrics,
            "best_metric": counters.best_metric,
            "best_epoch": counters.best_epoch,
            "best_path": (
                str(self.out_dir / f"best{WEIGHTS_SUFFIX}")
                if counters.best_metric is not None
                else None
            ),
            "last_path": str(self.out_dir / f"last{WEIGHTS_SUFFIX}"),
            "metrics_path": str(self.out_dir / "metrics.jsonl"),
            "curves_path": str(self.out_dir / "curves.png"),
        }

    def _open_log(self) -> MetricsLog:
        tensorboard_dir = self.out_dir / "tensorboard" if self.tensorboard else None
        log = MetricsLog(self.out_dir / "metrics.jsonl", tensorboard_dir=tensorboard_dir)
        if self._resumed:
            log.rewind(self.counters.global_step)
        else:
            log.start()
        return log

    def _finished(self) -> bool:
        if self.epochs is not None:
            return self.counters.epoch >= self.epochs
        return self.counters.elapsed_s >= self.time_budget_s

    def _run_progress(self) -> float:
        if self.epochs is not None:
            return self.counters.epoch / self.epochs
        return self.counters.elapsed_s / self.time_budget_s

    def _step_progress(self, epoch: int, index: int, steps: int | None) -> float:
        """Schedule progress at the start of step `index` of `epoch`."""
        if self.epochs is None:
            return self.counters.elapsed_s / self.time_budget_s
        return (epoch + index / steps) / self.epochs

    def _train_epoch(self, log: MetricsLog) -> dict[str, float]:
        """One pass over the loader (cut short when the time budget is spent); returns the
        epoch's mean losses."""
        epoch = self.counters.epoch
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch)
        steps = len(self.train_loader) if hasattr(self.train_loader, "__len__") else None
        if self.epochs is not None and not steps:
            raise ValueError("train_loader must have a length > 0 to train for a number of epochs")
        self.model.train()
        window, epoch_means = RunningMeans(), RunningMeans()
        total = f"/{self.epochs}" if self.epochs is not None else ""
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}{total}", disable=not self.progress_bar)
        with bar:
            tick = perf_counter()
            for index, (images, targets) in enumerate(self.train_loader):
                progress = self._step_progress(epoch, index, steps)
                lr = self.schedule.update(progress, self.global_step)
                losses = self._train_step(images, targets)
                now = perf_counter()
                self._count_step(len(images), now - tick)
                window.add({**losses, "step_time_s": now - tick, "images": len(images)})
                epoch_means.add(losses)
                tick = now
                if self.global_step % self.log_every == 0:
                    log.append(self._train_record(window, lr))
                    window.reset()
                bar.update()
                bar.set_postfix(loss=f"{losses['total_loss']:.4f}", lr=f"{lr:.3g}")
                if self.time_budget_s is not None and self._finished():
                    break
        if epoch_means.count == 0:
            raise ValueError(f"train_loader yielded no batches in epoch {epoch}")
        return epoch_means.means()

    def _count_step(self, num_images: int, seconds: float) -> None:
        self.counters.global_step += 1
        self.counters.elapsed_s += seconds
        self.counters.images_seen += num_images

    def _train_record(self, window: RunningMeans, lr: float) -> dict[str, Any]:
        means = window.means()
        images = means.pop("images")
        return {
            "kind": "train",
            "epoch": self.counters.epoch + 1,  # the epoch being trained, counted from 1
            "step": self.global_step,
            **means,
            "lr": lr,
            "images_per_s": images / means["step_time_s"] if means["step_time_s"] > 0 else None,
        }

    def _train_step(self, images: list[Tensor], targets: list[Instances]) -> dict[str, float]:
        """Forward, backward, optimizer and EMA step; returns total_loss and each loss term."""
        images = [image.to(self.device, non_blocking=True) for image in images]
        targets = [target.to(self.device) for target in targets]
        with autocast(self.amp, self.device):
            losses = self.model(images, targets)
        total = self._total_loss(losses)
        values = self._loss_values(total, losses)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
        else:
            total.backward()
        if self.grad_clip is not None:
            self._clip_gradients()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return values

    def _total_loss(self, losses: object) -> Tensor:
        if not isinstance(losses, dict) or not losses:
            raise TypeError(
                "model(images, targets) in train mode must return a non-empty dict of loss_* "
                f"tensors, got {type(losses).__name__}"
            )
        for name, value in losses.items():
            if not name.startswith("loss_") or not isinstance(value, Tensor) or value.ndim:
                raise TypeError(
                    f"the model's losses must be scalar tensors named loss_*, got '{name}': "
                    f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}"
                )
        return sum(losses.values())

    def _loss_values(self, total: Tensor, losses: dict[str, Tensor]) -> dict[str, float]:
        """Loss values as floats (one device sync); raises TrainingDivergedError on NaN/inf."""
        numbers = torch.stack([total.detach(), *(v.detach() for v in losses.values())])
        total_value, *term_values = numbers.float().cpu().tolist()
        terms = dict(zip(losses, term_values, strict=True))
        if not math.isfinite(total_value):
            bad = [f"{name}={value}" for name, value in terms.items() if not math.isfinite(value)]
            raise TrainingDivergedError(
                f"non-finite total loss {total_value} at step {self.global_step + 1} "
                f"(epoch {self.counters.epoch + 1}); non-finite terms: {', '.join(bad)}. "
                f"Stopped without saving; the last good checkpoint in {self.out_dir} is "
                "untouched. Try a lower lr, grad_clip, or amp=None."
            )
        return {"total_loss": total_value, **terms}

    def _clip_gradients(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(parameters, self.grad_clip)

    def _end_epoch(self, log: MetricsLog, epoch_losses: dict[str, float]) -> None:
        """Validate when due, record the epoch, and save best (when improved) and last."""
        counters = self.counters
        metrics = self._validate() if self._validation_due() else None
        improved = False
        if metrics is not None:
            counters.last_metrics = metrics
            score = metrics[TRACKED_METRIC[0]][TRACKED_METRIC[1]]
            improved = score is not None and (
                counters.best_metric is None or score > counters.best_metric
            )
            if improved:
                counters.best_metric, counters.best_epoch = score, counters.epoch
        record = {"kind": "epoch", "epoch": counters.epoch, "step": counters.global_step}
        record |= {"train": epoch_losses, "elapsed_s": counters.elapsed_s}
        if metrics is not None:
            record["val"] = metrics
        log.append(record)
        self._log_epoch(epoch_losses, metrics)
        self._save(metrics, improved)

    def _validation_due(self) -> bool:
        if self.val_loader is None:
            return False
        return self.counters.epoch % self.val_every == 0 or self._finished()

    def _validate(self) -> dict:
        model = self.ema.module if self.ema is not None else self.model
        result = validate(
            model,
            self.val_loader,
            class_names=self.class_names,
            category_ids=self.category_ids,
            device=self.device,
            amp=self.amp,
        )
        return result.metrics

    def _log_epoch(self, epoch_losses: dict[str, float], metrics: dict | None) -> None:
        message = f"epoch {self.counters.epoch}: loss {epoch_losses['total_loss']:.4f}"
        if metrics is not None:
            ap = {t: metrics[t]["AP"] for t in ("segm", "bbox")}
            message += ", " + ", ".join(
                f"{t} AP {'n/a' if v is None else f'{v:.4f}'}" for t, v in ap.items()
            )
        logger.info(message)

    def _save(self, metrics: dict | None, improved: bool) -> None:
        """Write best (when improved), last and last.state.pt, refusing non-finite weights."""
        weights = self.ema.module if self.ema is not None else self.model
        epoch = self.counters.epoch
        try:
            check_finite(self.model.state_dict(), f"model weights after epoch {epoch}")
            if self.ema is not None:
                check_finite(weights.state_dict(), f"EMA weights after epoch {epoch}")
        except ValueError as error:
            raise TrainingDivergedError(
                f"{error}; the last good checkpoint in {self.out_dir} is untouched. "
                "Try a lower lr or grad_clip."
            ) from None
        metadata = self._weights_metadata(metrics)
        if improved:
            save_weights(self.out_dir / "best", weights, metadata)
        save_weights(self.out_dir / "last", weights, metadata)
        save_training_state(self.out_dir / "last", self._training_state())

    def _weights_metadata(self, metrics: dict | None) -> dict[str, Any]:
        return {
            **self.metadata,
            "classes": self.class_names,
            "category_ids": self.category_ids,
            "epoch": self.counters.epoch,
            "step": self.counters.global_step,
            "metrics": metrics,
            "ema": self.ema is not None,
        }

    def _training_state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "counters": asdict(self.counters),
            "rng": capture_rng_state(),
        }


def _check_run_length(epochs: int | None, time_budget_s: float | None) -> None:
    if (epochs is None) == (time_budget_s is None):
        raise ValueError(
            f"pass exactly one of epochs and time_budget_s, got epochs={epochs}, "
            f"time_budget_s={time_budget_s}"
        )
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if time_budget_s is not None and not time_budget_s > 0:
        raise ValueError(f"time_budget_s must be > 0, got {time_budget_s}")


def _check_options(
    val_every: int, log_every: int, grad_clip: float | None, ema_decay: float | None
) -> None:
    if val_every < 1:
        raise ValueError(f"val_every must be >= 1, got {val_every}")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be > 0 or None, got {grad_clip}")
    if ema_decay is not None and not 0 < ema_decay < 1:
        raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay}")


def _check_classes(
    class_names: Sequence[str], category_ids: Sequence[int] | None
) -> tuple[list[str], list[int]]:
    """(class names, category ids); the ids default to the labels 0 .. K - 1."""
    names = list(class_names)
    if not names or not all(isinstance(name, str) for name in names):
        raise ValueError(f"class_names must be a non-empty list of strings, got {class_names!r}")
    if category_ids is None:
        return names, list(range(len(names)))
    ids = [int(i) for i in category_ids]
    if len(ids) != len(names):
        raise ValueError(f"category_ids has {len(ids)} entries for {len(names)} class_names")
    return names, ids


def _check_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    reserved = sorted(set(metadata) & set(TRAINER_METADATA_KEYS))
    if reserved:
        raise ValueError(
            f"metadata must not set {reserved}: the trainer writes {list(TRAINER_METADATA_KEYS)}"
        )
    metadata_json(metadata)  # fail now, not after the first epoch
    return dict(metadata)
