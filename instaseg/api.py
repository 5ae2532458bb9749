"""The user-facing model object: `load_model(...)` -> `.predict`, `.train`, `.val`, `.save`.

    model = instaseg.load_model("mask_rcnn_r18_fpn")          # untrained; classes come from data
    model.train("data.yaml", time=12, imgsz=256, out="runs/r18")
    model = instaseg.load_model("runs/r18/best.safetensors")  # classes and config from metadata
    results = model.predict("images/")                        # list[Instances]

A checkpoint is `X.safetensors` with JSON metadata (classes, category ids, model name and
kwargs, image size, epoch, metrics), so a model never has to be rebuilt by hand.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from instaseg.data.config import find_config, load_data_config, resolve_dataset
from instaseg.data.dataset import InstanceDataset
from instaseg.data.image_io import read_image
from instaseg.data.loader import build_loader
from instaseg.data.sources import list_images
from instaseg.data.transforms import TRAIN_SCALE_RANGE, train_transforms
from instaseg.engine import LRSchedule, Trainer, build_optimizer, load_weights, save_weights
from instaseg.engine.validation import predict_loader
from instaseg.eval import EvalResult, evaluate
from instaseg.models.optimize import optimize_for_inference
from instaseg.models.zoo import MODELS, build_model, load_state_strictly
from instaseg.structures import Instances

logger = logging.getLogger(__name__)

# From-scratch defaults for CPU-sized runs (GroupNorm everywhere, AdamW, cosine schedule).
DEFAULT_LR = {"adamw": 2e-4, "sgd": 0.02}
DEFAULT_WEIGHT_DECAY = {"adamw": 0.05, "sgd": 1e-4}


class Model:
    """A named network plus its classes; the network is built once the classes are known."""

    def __init__(
        self,
        name: str,
        *,
        model_kwargs: dict[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        category_ids: Sequence[int] | None = None,
        image_size: int | None = None,
        network: nn.Module | None = None,
        device: str | torch.device = "cpu",
    ):
        if name not in MODELS:
            build_model(name, 1)  # raises ValueError with the closest names
        self.name = name
        self.model_kwargs = dict(model_kwargs or {})
        self.class_names = list(class_names) if class_names is not None else None
        self.category_ids = list(category_ids) if category_ids is not None else None
        self.image_size = image_size
        self.device = torch.device(device)
        self.network = network.to(self.device) if network is not None else None
        self._inference_copy: _InferenceCopy | None = None  # predict's, see _inference_network

    # ------------------------------------------------------------------ inference

    def predict(
        self,
        source: Tensor | str | Path | Sequence[Tensor | str | Path],
        *,
        conf: float = 0.25,
        optimize: bool = True,
    ) -> list[Instances]:
        """Instances per image (original frame), keeping detections scoring >= conf.

        source: a uint8 [3, H, W] image, an image path, a folder, a glob, or a list of those.
        optimize: run an inference copy of the network (`models.optimize.optimize_for_inference`:
            norms folded into convs, channels-last; the same detections up to float rounding,
            faster on the CPU). The copy is made once and made again after the weights change.
        """
        network = self._inference_network() if optimize else self._require_network("predict")
        images = [image for _, image in self.load_sources(source)]
        network.eval()
        results = []
        with torch.inference_mode():
            for image in images:
                (instances,) = network([image.to(self.device)])
                results.append(_keep_confident(instances.to("cpu"), conf))
        return results

    def _inference_network(self) -> nn.Module:
        """The optimize_for_inference copy of the network, made again whenever the network,
        one of its tensors, a tensor's values (training, load_state_dict and in-place edits
        bump a tensor's version counter) or a module's setting changed since."""
        network = self._require_network("predict")
        if self._inference_copy is None or not self._inference_copy.made_from(network):
            self._inference_copy = _InferenceCopy.of(network)
        return self._inference_copy.network

    @staticmethod
    def load_sources(source: Any) -> list[tuple[str, Tensor]]:
        """(name, uint8 image [3, H, W]) pairs for what `predict` accepts."""
        items = source if isinstance(source, (list, tuple)) else [source]
        loaded = []
        for index, item in enumerate(items):
            if isinstance(item, Tensor):
                if item.dtype != torch.uint8 or item.ndim != 3 or item.shape[0] != 3:
                    raise TypeError(
                        f"source[{index}] must be a uint8 image [3, H, W], "
                        f"got {item.dtype} {tuple(item.shape)}"
                    )
                loaded.append((f"image_{index}", item))
            else:
                loaded += [(str(path), read_image(path)) for path in list_images(item)]
        return loaded

    # ------------------------------------------------------------------ training

    def train(
        self,
        data: str | Path,
        *,
        epochs: int | None = None,
        time: float | None = None,
        imgsz: int = 512,
        batch: int = 4,
        workers: int = 2,
        device: str = "cpu",
        out: str | Path = "runs/train",
        scale_range: tuple[float, float] = TRAIN_SCALE_RANGE,
        optimizer: str = "adamw",
        lr: float | None = None,
        weight_decay: float | None = None,
        warmup_steps: int = 200,
        amp: str | None = None,
        ema: float | None = None,
        grad_clip: float | None = 10.0,
        seed: int = 0,
        val_every: int = 1,
        resume: str | Path | None = None,
        skip_bad: bool = False,
    ) -> dict[str, Any]:
        """Train on a dataset yaml's `train` split, validating on `val` when it has one.

        Exactly one of epochs and time (minutes; the LR schedule fits the budget). imgsz is
        the longer image side the network sees; scale_range the scale jitter of the training
        transforms (`data.transforms.train_transforms`; (1, 1): none, which learns fastest in
        budgets of minutes). Writes out/{best,last}.safetensors (+ .json),
        last.state.pt for `resume`, metrics.jsonl and curves.png; afterwards this object holds
        the best weights. Returns the trainer's summary.
        """
        train_set, val_set = _train_val_datasets(data, skip_bad)
        torch.manual_seed(seed)  # before building, so a new network's initial weights follow it
        self._prepare_for(train_set, imgsz)
        self.device = torch.device(device)
        network = self.network.to(self.device)
        lr = lr if lr is not None else DEFAULT_LR.get(optimizer, 1e-3)
        decay = weight_decay if weight_decay is not None else DEFAULT_WEIGHT_DECAY.get(optimizer, 0)
        opt = build_optimizer(network, optimizer, lr=lr, weight_decay=decay)
        schedule = LRSchedule(opt, "cosine", warmup_steps=warmup_steps)
        train_loader = build_loader(
            train_set.with_transforms(train_transforms(imgsz, scale_range=scale_range)),
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            seed=seed,
            drop_last=len(train_set) > batch,
        )
        val_loader = _eval_loader(val_set, workers, seed) if val_set is not None else None
        trainer = Trainer(
            network,
            train_loader,
            opt,
            schedule=schedule,
            out_dir=out,
            class_names=self.class_names,
            category_ids=self.category_ids,
            metadata=self._metadata(),
            epochs=epochs,
            time_budget_s=time * 60 if time is not None else None,
            val_loader=val_loader,
            val_every=val_every,
            amp=amp,
            grad_clip=grad_clip,
            ema_decay=ema,
            device=self.device,
            resume_from=resume,
        )
        summary = trainer.fit()
        best = Path(out) / "best.safetensors"
        if best.is_file():
            state, _ = load_weights(best)
            self.network.load_state_dict(state)
        return summary

    def val(
        self,
        data: str | Path,
        *,
        split: str = "val",
        workers: int = 2,
        save_json: str | Path | None = None,
        skip_bad: bool = False,
    ) -> EvalResult:
        """COCO segm/bbox/boundary metrics on a split; save_json writes COCO results with the
        dataset's own image and category ids."""
        network = self._require_network("val")
        dataset = resolve_dataset(data, split, skip_bad=skip_bad)
        self._check_classes(dataset)
        loader = _eval_loader(dataset, workers, seed=0)
        ground_truth, predictions = predict_loader(network, loader, device=self.device)
        if save_json is not None:
            results = []
            for record, instances in zip(dataset.records, predictions, strict=True):
                results += instances.to_coco(record.id, dataset.category_ids)
            Path(save_json).write_text(json.dumps(results))
        return evaluate(
            ground_truth,
            predictions,
            iou_types=("segm", "bbox", "boundary"),
            class_names=dataset.class_names,
            category_ids=dataset.category_ids,
        )

    def save(self, path: str | Path) -> Path:
        """Write the current weights with their metadata (`X.safetensors` + `X.json`)."""
        network = self._require_network("save")
        metadata = {
            **self._metadata(),
            "classes": self.class_names,
            "category_ids": self.category_ids,
        }
        return save_weights(path, network, metadata)

    # ------------------------------------------------------------------ helpers

    def _metadata(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "model_kwargs": self.model_kwargs,
            "image_size": self.image_size,
        }

    def _prepare_for(self, dataset: InstanceDataset, imgsz: int) -> None:
        """Build the network for the dataset's classes, or check a loaded one matches."""
        if self.network is not None:
            self._check_classes(dataset)
            return
        self.class_names, self.category_ids = dataset.class_names, dataset.category_ids
        self.image_size = imgsz
        self.model_kwargs = {"min_size": imgsz, "max_size": imgsz, **self.model_kwargs}
        self.network = build_model(self.name, len(self.class_names), **self.model_kwargs)

    def _check_classes(self, dataset: InstanceDataset) -> None:
        if self.class_names is not None and dataset.class_names != self.class_names:
            raise ValueError(
                f"{dataset.source}: the data's classes {dataset.class_names} differ from the "
                f"model's {self.class_names}"
            )

    def _require_network(self, action: str) -> nn.Module:
        if self.network is None:
            raise RuntimeError(
                f"cannot {action}: model {self.name!r} has no weights yet; train it first or "
                "load a checkpoint with instaseg.load_model(path)"
            )
        return self.network


def load_model(
    source: str | Path, *, device: str | torch.device = "cpu", **model_kwargs: Any
) -> Model:
    """A Model from a checkpoint path (`.safetensors`, or its stem) or a zoo name.

    A zoo name gives an untrained model whose classes come from the data at `train`;
    model_kwargs override the builder's options (e.g. box_head="2fc").
    """
    text = str(source)
    if text in MODELS:
        return Model(text, model_kwargs=model_kwargs, device=device)
    path = Path(text)
    if path.suffix != ".safetensors" and not path.with_suffix(".safetensors").is_file():
        build_model(text, 1)  # not a path: an unknown name, answered with the closest names
    state, metadata = load_weights(path)
    missing = [key for key in ("model", "classes") if key not in metadata]
    if missing:
        raise ValueError(
            f"{path}: metadata lacks {missing}; was it written by instaseg (train or convert)?"
        )
    kwargs = {**metadata.get("model_kwargs", {}), **model_kwargs}
    network = build_model(metadata["model"], len(metadata["classes"]), **kwargs)
    load_state_strictly(network, state, str(path))
    return Model(
        metadata["model"],
        model_kwargs=kwargs,
        class_names=metadata["classes"],
        category_ids=metadata.get("category_ids"),
        image_size=metadata.get("image_size"),
        network=network,
        device=device,
    )


@dataclass
class _InferenceCopy:
    """An inference copy of a network and what it was made from: weak references to the
    network and to its parameters and buffers (identity, not ids: ids are reused), their
    version counters, and the modules' plain settings (score_threshold and the like)."""

    network: nn.Module
    source: weakref.ref
    tensors: list[weakref.ref]
    versions: list[int]
    settings: list[dict[str, Any]]

    @classmethod
    def of(cls, network: nn.Module) -> _InferenceCopy:
        tensors = _state_tensors(network)
        return cls(
            network=optimize_for_inference(network),
            source=weakref.ref(network),
            tensors=[weakref.ref(t) for t in tensors],
            versions=[t._version for t in tensors],
            settings=_settings(network),
        )

    def made_from(self, network: nn.Module) -> bool:
        tensors = _state_tensors(network)
        return (
            self.source() is network
            and len(tensors) == len(self.tensors)
            and all(ref() is t for ref, t in zip(self.tensors, tensors, strict=True))
            and [t._version for t in tensors] == self.versions
            and _settings(network) == self.settings
        )


def _state_tensors(network: nn.Module) -> list[Tensor]:
    return [*network.parameters(), *network.buffers()]


def _settings(network: nn.Module) -> list[dict[str, Any]]:
    """Each module's public attributes of plain types (thresholds, counts, names), except its
    train/eval flag."""
    plain = (bool, int, float, str, tuple, type(None))
    return [
        {
            name: value
            for name, value in vars(module).items()
            if isinstance(value, plain) and not name.startswith("_") and name != "training"
        }
        for module in network.modules()
    ]


def _keep_confident(instances: Instances, conf: float) -> Instances:
    if instances.scores is None:
        return instances
    return instances[instances.scores >= conf]


def _train_val_datasets(
    data: str | Path, skip_bad: bool
) -> tuple[InstanceDataset, InstanceDataset | None]:
    config_path = find_config(data)
    if config_path is None:
        raise ValueError(f"{data}: training needs a dataset yaml (or a folder with data.yaml)")
    config = load_data_config(config_path)
    train = config.dataset("train", skip_bad=skip_bad)
    val = config.dataset("val", skip_bad=skip_bad) if "val" in config.splits else None
    return train, val


def _eval_loader(dataset: InstanceDataset, workers: int, seed: int):
    """Original images and targets, in dataset order (no transforms: the model resizes)."""
    return build_loader(
        dataset.with_transforms(None), batch_size=1, shuffle=False, num_workers=workers, seed=seed
    )
