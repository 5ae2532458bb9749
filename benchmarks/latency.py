"""CPU latency of Mask R-CNN in eval mode, one image at a time.

Run: .venv/bin/python benchmarks/latency.py --model mask_rcnn_r50_fpn_torchvision \
         --imgsz 640 --threads 2 --runs 10 [--write]

The model is built with random weights (seed 0) and min_size = max_size = imgsz, so a square
imgsz image runs at imgsz (no resizing). The input is one fixed random uint8 image. Each row
times `runs` calls of `model([image])` under torch.inference_mode after `warmup` calls and
gives the median, 90th percentile and minimum wall time, and the median process CPU time
(all threads; steadier than wall time when other jobs share the machine).

Rows: "eager" is the model as built; "optimized" is `optimize_for_inference(model)` (fixed
norms folded into convs, Winograd 3x3 convs via NNPACK where they pay, channels-last
weights). Detections: random weights give arbitrary scores, so each variant runs with the
model's score threshold (0.05), with 1.0 (no detection passes: backbone, RPN and box head
only) and with 0.0 (the maximum, detections_per_image = 100, so the mask head and mask
pasting run 100 times). `--write` replaces the "## Mask R-CNN latency" section of
benchmarks/RESULTS.md with the command, the machine and the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from results_md import RESULTS, write_section

from instaseg.models.optimize import optimize_for_inference
from instaseg.models.zoo import MODELS, build_model

SECTION = "## Mask R-CNN latency"
THRESHOLDS = (("default", None), ("none", 1.0), ("max", 0.0))


def measure(
    model, image: torch.Tensor, runs: int, warmup: int
) -> tuple[list[float], list[float], int]:
    """Wall times and process CPU times (all threads) in ms of `runs` calls after `warmup`
    calls, and the number of detections. On a shared machine the wall time grows with the
    other jobs' load; the CPU time shows the work itself."""
    with torch.inference_mode():
        for _ in range(warmup):
            detections = len(model([image])[0])
        times, cpu = [], []
        for _ in range(runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            model([image])
            times.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
    return times, cpu, detections


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def bench_model(name: str, args: argparse.Namespace, image: torch.Tensor) -> list[dict]:
    torch.manual_seed(0)
    base = build_model(name, args.num_classes, min_size=args.imgsz, max_size=args.imgsz).eval()
    default_threshold = base.roi_heads.score_threshold
    variants = [("eager", base), ("optimized", optimize_for_inference(base))]
    rows = []
    for variant, model in variants:
        if variant not in args.variants:
            continue
        for label, threshold in THRESHOLDS:
            model.roi_heads.score_threshold = default_threshold if threshold is None else threshold
            times, cpu, detections = measure(model, image, args.runs, args.warmup)
            rows.append(
                {
                    "model": name,
                    "variant": variant,
                    "threshold": f"{model.roi_heads.score_threshold:g} ({label})",
                    "detections": detections,
                    "median": statistics.median(times),
                    "p90": percentile(times, 0.9),
                    "min": min(times),
                    "cpu": statistics.median(cpu),
                }
            )
            row = rows[-1]
            print(
                f"{name:32s} {variant:9s} score>{row['threshold']:14s} {detections:4d} dets  "
                f"median {row['median']:7.1f} ms  p90 {row['p90']:7.1f} ms  "
                f"min {row['min']:7.1f} ms  cpu {row['cpu']:7.1f} ms",
                flush=True,
            )
    return rows


def machine(threads: int) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} cores visible, {threads} threads; load average {load:.1f} "
        f"at the end; Python {platform.python_version()}, torch {torch.__version__}"
    )


def section(rows: list[dict], args: argparse.Namespace) -> str:
    options = (
        f"--model {' '.join(args.model)} --imgsz {args.imgsz} --threads {args.threads} "
        f"--runs {args.runs} --warmup {args.warmup} --num-classes {args.num_classes}"
    )
    command = f"`.venv/bin/python benchmarks/latency.py {options} --write` (and a --note)"
    lines = [
        SECTION,
        "",
        f"Command: {command}",
        "",
        f"Machine: {machine(args.threads)}",
        "",
        f"One random {args.imgsz}x{args.imgsz} image, run at {args.imgsz} (min_size = max_size), "
        f"{args.num_classes} classes, random weights (seed 0); median, p90 and min of "
        f"{args.runs} calls after {args.warmup} warm-up calls, torch.inference_mode; CPU ms is "
        "the median process CPU time of a call, both threads together.",
        "",
        "| model | variant | score threshold | detections | median ms | p90 ms | min ms | CPU ms |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| `{row['model']}` | {row['variant']} | {row['threshold']} | {row['detections']} "
            f"| {row['median']:.0f} | {row['p90']:.0f} | {row['min']:.0f} | {row['cpu']:.0f} |"
        )
    lines += ["", args.note.strip(), ""] if args.note else [""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", nargs="+", default=["mask_rcnn_r50_fpn_torchvision"], choices=sorted(MODELS)
    )
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument(
        "--variants", nargs="+", default=["eager", "optimized"], choices=["eager", "optimized"]
    )
    parser.add_argument("--note", default="", help="a paragraph to add under the table")
    parser.add_argument("--write", action="store_true", help=f"write '{SECTION}' to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(
        0, 256, (3, args.imgsz, args.imgsz), dtype=torch.uint8, generator=generator
    )
    rows = [row for name in args.model for row in bench_model(name, args, image)]
    if args.write:
        write_section(SECTION, section(rows, args))
        print(f"wrote {SECTION!r} to {RESULTS}")


if __name__ == "__main__":
    main()
