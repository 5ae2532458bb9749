"""Training throughput (images/s) at 512 px on the CPU: forward, backward and AdamW step.

Run: .venv/bin/python benchmarks/train_throughput.py --imgsz 512 --batch 4 --steps 5 \
         --threads 2 [--write]

The batch is the first `batch` images of a synthetic dataset (512 x 512, seed 0) through the
training transforms (scale jitter onto a 512 square, flip, colour jitter), so the network sees
512 x 512 inputs with their instances, as in `instaseg train --imgsz 512`. Data loading is not
timed (the loader's own throughput is in "Loader throughput"). Each row is the median step
time over `steps` steps after 2 warm-up steps, as images/s. `--write` replaces the
"## Training throughput" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch
from results_md import RESULTS, write_section

from instaseg.data.config import load_data_config
from instaseg.data.synth import generate_synthetic
from instaseg.data.transforms import train_transforms
from instaseg.demo import DEMO_MODEL_KWARGS
from instaseg.models.zoo import build_model

SECTION = "## Training throughput"
# (row name, zoo name, options)
CONFIGS = (
    ("mask_rcnn_r18_fpn", "mask_rcnn_r18_fpn", {}),
    ("mask_rcnn_r18_fpn, demo recipe", "mask_rcnn_r18_fpn", DEMO_MODEL_KWARGS),
    ("mask_rcnn_r50_fpn", "mask_rcnn_r50_fpn", {}),
    ("yolact_nano", "yolact_nano", {}),
)


def step_times(model, images, targets, steps: int, warmup: int = 2) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for index in range(warmup + steps):
        start = time.perf_counter()
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgsz", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--rows",
        nargs="+",
        default=[row for row, _, _ in CONFIGS],
        choices=[row for row, _, _ in CONFIGS],
        help="which rows to measure (default all)",
    )
    parser.add_argument("--write", action="store_true", help=f"write '{SECTION}' to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        size = (args.imgsz, args.imgsz)
        config = generate_synthetic(folder, num_train=args.batch, num_val=0, image_size=size)
        dataset = load_data_config(config).dataset("train")
        dataset = dataset.with_transforms(train_transforms(args.imgsz))
        images, targets = map(list, zip(*(dataset[i] for i in range(args.batch)), strict=True))
    rows = []
    for row_name, name, options in CONFIGS:
        if row_name not in args.rows:
            continue
        torch.manual_seed(0)
        model = build_model(name, 6, min_size=args.imgsz, max_size=args.imgsz, **options)
        times = step_times(model, images, targets, args.steps)
        median = statistics.median(times)
        rows.append(f"| {row_name} | {median:.2f} | {args.batch / median:.2f} |")
        print(rows[-1], flush=True)
    text = "\n".join(
        [
            SECTION,
            "",
            f"Command: `.venv/bin/python benchmarks/train_throughput.py --imgsz {args.imgsz} "
            f"--batch {args.batch} --steps {args.steps} --threads {args.threads} --rows "
            + " ".join(repr(row) for row in args.rows)
            + " --write`",
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{args.threads} threads, torch {torch.__version__}.",
            "",
            f"Batch of {args.batch} synthetic {args.imgsz} x {args.imgsz} images (6 classes), "
            "forward + backward + AdamW step, median of "
            f"{args.steps} steps after 2 warm-up steps; data loading not included.",
            "",
            "| model | s / step | images / s |",
            "|---|---:|---:|",
            *rows,
            "",
        ]
    )
    if args.write:
        write_section(SECTION, text)
        print(f"updated {RESULTS}")


if __name__ == "__main__":
    main()
