"""The demo job on generated data: what `make demo` runs.

The whole pipeline, small enough for a laptop CPU:

    generate the synthetic dataset -> statistics and ground-truth overlays
    -> train the default CPU model for a time budget -> COCO evaluation on val
    -> predictions (overlay PNGs, COCO results json) -> a summary table

Everything lands under one output folder that the demo owns: re-running replaces what an
earlier demo wrote there (its data, train, predictions and overlays folders), nothing else.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from instaseg.api import Model
from instaseg.data.config import load_data_config
from instaseg.data.stats import dataset_stats, format_stats
from instaseg.data.synth import generate_synthetic
from instaseg.eval.plots import plot_pr_curves
from instaseg.eval.report import format_coco
from instaseg.visualize import save_overlay

logger = logging.getLogger(__name__)

# The default CPU recipe (benchmarks/RESULTS.md has the figures it reaches): a slim
# ResNet-18-FPN Mask R-CNN (half-width ResNet, 64-channel FPN and heads, 4conv1fc box head
# with GroupNorm), small anchors for 256-px images, AdamW at a high learning rate, batches
# of 2 images and no scale jitter (flips and colour jitter only). In a budget of minutes,
# jitter slows learning more than it helps, and twice the updates of half the size learn
# faster early on (GroupNorm does not care about the batch; at 12 minutes batch 2 and 4 end
# level): benchmarks/RESULTS.md. About 0.6 s per step on 2 cores.
DEMO_MODEL = "mask_rcnn_r18_fpn"
DEMO_MODEL_KWARGS = {
    "width": 32,
    "fpn_channels": 64,
    "box_conv_dim": 64,
    "box_fc_dim": 256,
    "mask_conv_dim": 64,
    "box_batch_size_per_image": 128,
    "rpn_post_nms_topk_train": 500,
    "anchor_sizes": (16, 32, 64, 128, 256),
}
DEMO_LR = 2e-3
DEMO_WARMUP_STEPS = 100
DEMO_SCALE_RANGE = (1.0, 1.0)
DEMO_BATCH = 2
# with data, overlays, validation and predictions, and the venv bootstrap of a fresh clone,
# `make demo` takes ~3 minutes more than the training budget on 2 cores
DEMO_TRAIN_MINUTES = 11.0


def run_demo(
    out_dir: str | Path,
    *,
    num_train: int = 200,
    num_val: int = 50,
    image_size: tuple[int, int] = (256, 256),
    train_minutes: float = DEMO_TRAIN_MINUTES,
    model: str = DEMO_MODEL,
    model_kwargs: dict[str, Any] | None = None,
    batch: int = DEMO_BATCH,
    workers: int = 1,
    num_overlays: int = 12,
    seed: int = 0,
) -> dict:
    """Run the demo into out_dir; returns the summary it prints (also saved as summary.json).

    train_minutes: the training budget (the schedule fits it); 0 skips training and
    everything after it (data only). model_kwargs: the builder's options (None: the demo's
    CPU recipe, DEMO_MODEL_KWARGS, when model is DEMO_MODEL; else the builder's defaults).
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    config_path = generate_synthetic(
        out_dir / "data",
        num_train=num_train,
        num_val=num_val,
        seed=seed,
        image_size=image_size,
        overwrite=True,  # the demo's own folder
    )
    summary: dict[str, Any] = {"data": str(config_path), "splits": _describe_data(config_path)}
    for split in summary["splits"]:
        _draw_ground_truth(config_path, split, out_dir / "overlays" / split, num_overlays)
    if train_minutes > 0:
        summary["model"] = _train_and_evaluate(
            config_path,
            out_dir,
            name=model,
            model_kwargs=_model_kwargs(model, model_kwargs),
            minutes=train_minutes,
            imgsz=max(image_size),
            batch=batch,
            workers=workers,
            num_overlays=num_overlays,
            seed=seed,
        )
    summary["elapsed_s"] = round(time.perf_counter() - started, 1)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    return summary


def _model_kwargs(model: str, model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    if model_kwargs is not None:
        return model_kwargs
    return dict(DEMO_MODEL_KWARGS) if model == DEMO_MODEL else {}


def _describe_data(config_path: Path) -> dict[str, dict]:
    config = load_data_config(config_path)
    splits = {}
    for split in config.splits:
        stats = dataset_stats(config.dataset(split))
        print(format_stats(stats, title=f"== synthetic {split}"), end="\n\n")
        splits[split] = {"images": stats.num_images, "instances": stats.num_instances}
    return splits


def _draw_ground_truth(config_path: Path, split: str, folder: Path, count: int) -> None:
    dataset = load_data_config(config_path).dataset(split)
    for index in tqdm(range(min(count, len(dataset))), desc=f"overlays {split}", unit="img"):
        image, instances = dataset[index]
        name = Path(dataset.records[index].file_name).stem
        save_overlay(folder / f"{name}.png", image, instances, dataset.class_names)


def _train_and_evaluate(
    config_path: Path,
    out_dir: Path,
    *,
    name: str,
    model_kwargs: dict[str, Any],
    minutes: float,
    imgsz: int,
    batch: int,
    workers: int,
    num_overlays: int,
    seed: int,
) -> dict[str, Any]:
    train_dir, predictions_dir = out_dir / "train", out_dir / "predictions"
    for folder in (train_dir, predictions_dir):  # the demo's own outputs of an earlier run
        if folder.exists():
            shutil.rmtree(folder)
    predictions_dir.mkdir(parents=True)
    model = Model(name, model_kwargs=model_kwargs)
    training = model.train(
        config_path,
        time=minutes,
        imgsz=imgsz,
        batch=batch,
        workers=workers,
        out=train_dir,
        lr=DEMO_LR,
        warmup_steps=DEMO_WARMUP_STEPS,
        scale_range=DEMO_SCALE_RANGE,
        seed=seed,
        val_every=1_000_000,  # validate once, at the end of the budget
    )
    result = model.val(config_path, workers=workers, save_json=predictions_dir / "val.json")
    print(format_coco(result))
    (predictions_dir / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    plot_pr_curves(result, predictions_dir / "plots")
    _draw_predictions(model, config_path, predictions_dir / "overlays", num_overlays)
    return {
        "name": name,
        "params": sum(p.numel() for p in model.network.parameters()),
        "train_minutes": minutes,
        "epochs": training["epochs"],
        "steps": training["steps"],
        "weights": str(train_dir / "best.safetensors"),
        "curves": str(train_dir / "curves.png"),
        "predictions": str(predictions_dir),
        "val": {iou_type: result.metrics[iou_type] for iou_type in ("segm", "bbox")},
    }


def _draw_predictions(model: Model, config_path: Path, folder: Path, count: int) -> None:
    dataset = load_data_config(config_path).dataset("val")
    for index in tqdm(range(min(count, len(dataset))), desc="predictions", unit="img"):
        image, _ = dataset[index]
        (instances,) = model.predict(image, conf=0.5)
        name = Path(dataset.records[index].file_name).stem
        save_overlay(folder / f"{name}.png", image, instances, model.class_names)


def format_summary(summary: dict) -> str:
    lines = ["", "demo summary", f"  dataset      {summary['data']}"]
    for split, info in summary["splits"].items():
        lines.append(f"  {split:<12} {info['images']} images, {info['instances']} instances")
    trained = summary.get("model")
    if trained is not None:
        segm, bbox = trained["val"]["segm"], trained["val"]["bbox"]
        lines += [
            f"  model        {trained['name']} ({trained['params'] / 1e6:.1f}M params), "
            f"{trained['train_minutes']:g} min: {trained['epochs']} epochs, "
            f"{trained['steps']} steps",
            f"  val mask AP  {_ap_line(segm)}",
            f"  val box AP   {_ap_line(bbox)}",
            f"  weights      {trained['weights']}",
            f"  curves       {trained['curves']}",
            f"  predictions  {trained['predictions']} (overlays/, val.json, metrics.json, plots/)",
        ]
    lines.append(f"  elapsed      {summary['elapsed_s']:.0f} s")
    return "\n".join(lines)


def _ap_line(metrics: dict[str, float | None]) -> str:
    def number(key: str) -> str:
        value = metrics.get(key)
        return "-" if value is None else f"{value:.3f}"

    return f"{number('AP')}  (AP50 {number('AP50')}, AP75 {number('AP75')})"
