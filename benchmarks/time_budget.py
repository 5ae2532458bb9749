"""Val mask AP on the synthetic demo dataset after a fixed training budget (`--time`).

Run: .venv/bin/python benchmarks/time_budget.py --model mask_rcnn_r18_fpn --minutes 12 \
         --threads 2 [--val-every N] [--write]

The dataset is the demo's (`instaseg demo`: 200 train and 50 val images at 256 px, seed 0),
generated under runs/synth unless it is there. Each model trains with the demo's recipe
(`instaseg.demo`: AdamW lr 2e-3, 100 warmup steps, cosine decay fitted to the budget, imgsz
256, no scale jitter, validation once at the end); mask_rcnn_r18_fpn uses the demo's slim
options (DEMO_MODEL_KWARGS) and batch (2), other models their zoo defaults and batches of 4
(BatchNorm models need them). --lr, --batch, --scale-range and --model-opt vary the recipe for
ablations, --label names the row. --val-every N also validates every N epochs during training
and prints the learning curve (validation time does not count against the budget); the row
then scores the best of the validated checkpoints. To compare two models "for the same wall
time" on a 2-core machine, run both at once with --threads 1 each, or one after the other with
--threads 2 on an otherwise idle machine. `--write` adds or replaces this row (by its name) in
the "## Synthetic AP after a time budget" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
from pathlib import Path

import torch
from results_md import RESULTS, read_section, write_section

from instaseg.api import Model
from instaseg.cli.models import model_option
from instaseg.data.synth import generate_synthetic
from instaseg.demo import (
    DEMO_BATCH,
    DEMO_LR,
    DEMO_MODEL,
    DEMO_MODEL_KWARGS,
    DEMO_SCALE_RANGE,
    DEMO_WARMUP_STEPS,
)
from instaseg.engine import read_metrics
from instaseg.models.zoo import MODELS

SECTION = "## Synthetic AP after a time budget"
HEADER = (
    "| model | threads | budget (min) | epochs | steps | params (M) | mask AP | AP50 | box AP |"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path("runs/synth"))
    # recipe variations, for ablations (defaults: the demo's recipe)
    parser.add_argument("--lr", type=float, default=DEMO_LR)
    parser.add_argument("--batch", type=int, help=f"default {DEMO_BATCH} ({DEMO_MODEL}), else 4")
    parser.add_argument("--scale-range", type=float, nargs=2, default=DEMO_SCALE_RANGE)
    parser.add_argument(
        "--model-opt", action="append", default=[], type=model_option, metavar="KEY=VALUE"
    )
    parser.add_argument(
        "--val-every", type=int, help="also validate every N epochs and print the AP curve"
    )
    parser.add_argument("--label", help="the row's name (default: the model's name)")
    parser.add_argument("--out", type=Path, help="run folder (default runs/time_budget/MODEL)")
    parser.add_argument("--write", action="store_true", help=f"write to '{SECTION}'")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = args.data / "data.yaml"
    if not config.is_file():
        config = generate_synthetic(args.data, num_train=200, num_val=50, seed=0)
    out = args.out or Path("runs/time_budget") / args.model
    if out.exists():
        shutil.rmtree(out)
    kwargs = dict(DEMO_MODEL_KWARGS) if args.model == DEMO_MODEL else {}
    model = Model(args.model, model_kwargs={**kwargs, **dict(args.model_opt)})
    summary = model.train(
        config,
        time=args.minutes,
        imgsz=256,
        batch=args.batch or (DEMO_BATCH if args.model == DEMO_MODEL else 4),
        workers=1,
        out=out,
        lr=args.lr,
        warmup_steps=DEMO_WARMUP_STEPS,
        scale_range=tuple(args.scale_range),
        val_every=args.val_every or 1_000_000,
    )
    if args.val_every:
        print_val_curve(out / "metrics.jsonl")
    metrics = model.val(config, workers=1).metrics
    row = {
        "model": args.label or args.model,
        "threads": args.threads,
        "minutes": args.minutes,
        "epochs": summary["epochs"],
        "steps": summary["steps"],
        "params": sum(p.numel() for p in model.network.parameters()),
        "segm": metrics["segm"],
        "bbox": metrics["bbox"],
    }
    print(json.dumps(row, indent=2))
    if args.write:
        write_row(row)
        print(f"updated {RESULTS}")


def print_val_curve(metrics_path: Path) -> None:
    """One line per validation during training: epoch, step, minutes elapsed, mask AP."""
    print("| epoch | step | minutes | mask AP |\n|---:|---:|---:|---:|")
    for record in read_metrics(metrics_path):
        if record.get("kind") == "epoch" and "val" in record:
            print(
                f"| {record['epoch']} | {record['step']} | {record['elapsed_s'] / 60:.1f} | "
                f"{record['val']['segm']['AP']:.3f} |"
            )


def format_row(row: dict) -> str:
    segm, bbox = row["segm"], row["bbox"]
    return (
        f"| {row['model']} | {row['threads']} | {row['minutes']:g} | {row['epochs']} | "
        f"{row['steps']} | {row['params'] / 1e6:.2f} | {segm['AP']:.3f} | {segm['AP50']:.3f} | "
        f"{bbox['AP']:.3f} |"
    )


def write_row(row: dict) -> None:
    """Add or replace this row (by its name) of the section's main table; the text (and
    tables) under it and other sections stay."""
    current = read_section(SECTION)
    rows, footer = [], []
    if current is not None:
        lines = current.rstrip("\n").splitlines()
        first = next((i for i, line in enumerate(lines) if line.startswith("| model")), None)
        if first is not None:
            last = first  # the main table ends at its first non-table line
            while last + 1 < len(lines) and lines[last + 1].startswith("|"):
                last += 1
            rows = [
                line
                for line in lines[first + 2 : last + 1]
                if not line.startswith(f"| {row['model']} |")
            ]
            footer = lines[last + 1 :]
    rows.append(format_row(row))
    section = "\n".join(
        [
            SECTION,
            "",
            "Command: `.venv/bin/python benchmarks/time_budget.py --model NAME --minutes M "
            "--threads T --write` (see the script's docstring for the recipe).",
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}. Val = the demo's 50 synthetic images at 256 px.",
            "Rows with 1 thread ran two at a time, one core each, for the same wall time.",
            "",
            HEADER,
            "|---|---|---|---|---|---|---|---|---|",
            *sorted(rows),
            *(footer or [""]),
        ]
    )
    write_section(SECTION, section)


if __name__ == "__main__":
    main()
