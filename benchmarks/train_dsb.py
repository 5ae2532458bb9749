"""Mask R-CNN trained from scratch on DSB2018 nuclei, scored on a held-out 10 % of the images.

Run: .venv/bin/python benchmarks/train_dsb.py --minutes 30 --imgsz 512 [--write]

The shared images (../shared/data/dsb2018/stage1_train, 566 images) are split 90/10 with
`instaseg data split` semantics (seed 0) into runs/dsb/split unless --data names a split
yaml. The model trains for a time budget on the 90 % (no validation during training), then
predicts the 10 %. Scores:

- AP@tau = TP / (TP + FP + FN), one-to-one matching at IoU > tau (the DSB 2018 / StarDist
  "accuracy"), pooled over the held-out images, on the detections scoring >= --conf; at
  tau = 0.5 and averaged over tau = 0.5 ... 0.95 (`instaseg.eval.cells`);
- COCO mask and box AP on all detections (`instaseg.eval.evaluate`, 100 detections per image,
  as COCO counts them; dense images hold more nuclei than that, which caps their recall).

`--write` replaces the "## DSB2018 training" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from results_md import RESULTS, write_section

from instaseg.api import Model, _eval_loader
from instaseg.cli import main as cli_main
from instaseg.data.config import load_data_config
from instaseg.demo import DEMO_LR, DEMO_MODEL_KWARGS
from instaseg.engine.validation import predict_loader
from instaseg.eval import evaluate
from instaseg.eval.cells import cell_metrics

SECTION = "## DSB2018 training"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018" / "stage1_train"
# The demo's slim R18 recipe (instaseg.demo), with what nuclei need: small anchors, more
# proposals and up to 300 detections per image.
MODEL_KWARGS = {
    **DEMO_MODEL_KWARGS,
    "anchor_sizes": (8, 16, 32, 64, 128),
    "rpn_post_nms_topk_train": 1000,
    "rpn_post_nms_topk_test": 1000,
    "box_batch_size_per_image": 256,
    "detections_per_image": 300,
}


def held_out_split(out: Path) -> Path:
    """The 90/10 split of the shared images as a COCO data yaml under `out`."""
    config = out / "data.yaml"
    if config.is_file():
        return config
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} not found: this benchmark needs ../shared/data beside the repo")
    out.mkdir(parents=True, exist_ok=True)
    source = out / "source.yaml"
    source.write_text(f"format: masks\ntrain: {{root: {SHARED}}}\n")
    if cli_main(["data", "split", str(source), "--val", "0.1", "--seed", "0", "--out", str(out)]):
        raise SystemExit("instaseg data split failed")
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="split yaml (default: make runs/dsb/split)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--imgsz", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=DEMO_LR)
    parser.add_argument("--conf", type=float, default=0.5, help="score cut for the cell metrics")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/dsb"))
    parser.add_argument("--write", action="store_true", help=f"write '{SECTION}' to RESULTS.md")
    args = parser.parse_args()
    data = args.data or held_out_split(args.out / "split")
    train_dir = args.out / "train"
    model = Model("mask_rcnn_r18_fpn", model_kwargs=dict(MODEL_KWARGS))
    started = time.perf_counter()
    summary = model.train(
        data,
        time=args.minutes,
        imgsz=args.imgsz,
        batch=args.batch,
        workers=1,
        device=args.device,
        out=train_dir,
        lr=args.lr,
        warmup_steps=100,
        val_every=1_000_000,  # validate once, at the end
    )
    train_s = time.perf_counter() - started
    val_set = load_data_config(data).dataset("val")
    loader = _eval_loader(val_set, workers=1, seed=0)
    gt, predictions = predict_loader(model.network, loader, device=args.device)
    coco = evaluate(gt, predictions, iou_types=("segm", "bbox"))
    confident = [p[p.scores >= args.conf] for p in predictions]
    cells = cell_metrics(gt, confident)
    figures = {
        "train_minutes": args.minutes,
        "train_s": round(train_s),
        "epochs": summary["epochs"],
        "steps": summary["steps"],
        "train_images": len(load_data_config(data).dataset("train")),
        "val_images": len(val_set),
        "val_instances": sum(len(g) for g in gt),
        "cells": cells.to_dict(),
        "tp_fp_fn_at_0.5": (cells.tp[0], cells.fp[0], cells.fn[0]),
        "coco_segm": coco.metrics["segm"],
        "coco_bbox": coco.metrics["bbox"],
    }
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    if args.write:
        write_section(SECTION, format_section(figures, args))
        print(f"updated {RESULTS}")


def format_section(figures: dict, args: argparse.Namespace) -> str:
    cells, segm, bbox = figures["cells"], figures["coco_segm"], figures["coco_bbox"]
    tp, fp, fn = figures["tp_fp_fn_at_0.5"]
    return "\n".join(
        [
            SECTION,
            "",
            f"Command: `.venv/bin/python benchmarks/train_dsb.py --minutes {args.minutes:g} "
            f"--imgsz {args.imgsz} --batch {args.batch} --write`",
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, device {args.device}.",
            "",
            f"mask_rcnn_r18_fpn with {MODEL_KWARGS}, from random init, AdamW lr {args.lr:g}, "
            f"trained {figures['train_s'] / 60:.1f} min ({figures['epochs']} epochs, "
            f"{figures['steps']} steps of {args.batch} images at {args.imgsz} px) on "
            f"{figures['train_images']} images; scored on the held-out "
            f"{figures['val_images']} images ({figures['val_instances']} nuclei).",
            "",
            "| metric | value |",
            "|---|---|",
            f"| AP@0.5 = TP/(TP+FP+FN), score >= {args.conf:g} | {cells['AP50']:.3f} "
            f"(TP {tp}, FP {fp}, FN {fn}) |",
            f"| AP mean over tau 0.5:0.95 (DSB score) | {cells['AP']:.3f} |",
            f"| F1@0.5 | {cells['F1']:.3f} |",
            f"| COCO mask AP / AP50 / AP75 | {_f(segm['AP'])} / {_f(segm['AP50'])} / "
            f"{_f(segm['AP75'])} |",
            f"| COCO box AP | {_f(bbox['AP'])} |",
            "",
        ]
    )


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
