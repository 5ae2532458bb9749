"""Run a model over a loader and score its predictions (shared by training and `instaseg val`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from instaseg.engine.precision import autocast
from instaseg.eval import EvalResult, evaluate
from instaseg.structures import Instances


def predict_loader(
    model: nn.Module,
    loader: Iterable[tuple[list[Tensor], list[Instances]]],
    *,
    device: str | torch.device | None = None,
    amp: str | None = None,
) -> tuple[list[Instances], list[Instances]]:
    """(ground truth, predictions), one Instances each per image, both on the CPU.

    The loader yields (uint8 images [3, H, W], targets) batches in the images' original frame
    (no resizing transforms), so predictions and targets line up pixel for pixel. The model
    runs in eval mode under inference_mode (and autocast when `amp` is set) on `device`,
    default: the device of its first parameter; its train/eval mode is restored afterwards.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    ground_truth, predictions = [], []
    try:
        with torch.inference_mode():
            for images, targets in loader:
                with autocast(amp, device):
                    outputs = model([image.to(device) for image in images])
                _check_outputs(outputs, images)
                predictions += [output.to("cpu") for output in outputs]
                ground_truth += [target.to("cpu") for target in targets]
    finally:
        model.train(was_training)
    return ground_truth, predictions


def validate(
    model: nn.Module,
    loader: Iterable[tuple[list[Tensor], list[Instances]]],
    *,
    class_names: Sequence[str] | None = None,
    category_ids: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    amp: str | None = None,
) -> EvalResult:
    """COCO segm and bbox metrics of `model` over `loader` (see `predict_loader`);
    `result.metrics["segm"]["AP"]` is the mask AP."""
    ground_truth, predictions = predict_loader(model, loader, device=device, amp=amp)
    if not ground_truth:
        raise ValueError("the validation loader yielded no images")
    return evaluate(
        ground_truth,
        predictions,
        iou_types=("segm", "bbox"),
        class_names=class_names,
        category_ids=category_ids,
    )


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _check_outputs(outputs: object, images: list[Tensor]) -> None:
    if not isinstance(outputs, list) or not all(isinstance(o, Instances) for o in outputs):
        raise TypeError(
            f"model(images) in eval mode must return list[Instances], got {type(outputs).__name__}"
        )
    if len(outputs) != len(images):
        raise ValueError(f"model returned {len(outputs)} predictions for {len(images)} images")
    for i, (output, image) in enumerate(zip(outputs, images, strict=True)):
        if output.image_size != tuple(image.shape[1:]):
            raise ValueError(
                f"prediction {i} has image_size {output.image_size} but its image is "
                f"{tuple(image.shape[1:])}; predictions must be in the input image's frame"
            )
