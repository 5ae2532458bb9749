"""Latency per stage, throughput, params and GFLOPs of the zoo's main models (`instaseg bench`).

Run: .venv/bin/python benchmarks/model_latency.py [--model NAME:IMGSZ[:DETECTIONS[:compile]] ...]
         [--write]

By default: yolact_r50 at 550, yolact_nano at 640 and mask_rcnn_r50_fpn at 640, each built
with random weights (seed 0), 80 classes and min_size = max_size = imgsz, and measured with
`instaseg.bench.benchmark` in this one process: 2 threads, optimize_for_inference, score
threshold 0 and 100 detections per image (the worst case for post-processing; a third field
forces another count), 20 timed single-image calls after 5 warm-up calls, throughput at
batch 8. yolact_nano runs a second time with 10 detections, about what a trained model finds
on a street photo, to set beside Ultralytics' `predict` figure, and both yolact_nano rows
run again with the network under torch.compile (a fourth field "compile"; frozen weights, see
`instaseg.bench`). Names not in the zoo yet are
skipped with a note. --write replaces the "## Model latency" section of benchmarks/RESULTS.md
with the command, the machine, the table and the Ultralytics reference.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from results_md import RESULTS, write_section

from instaseg.bench import benchmark, cpu_name
from instaseg.models.zoo import MODELS, build_model

SECTION = "## Model latency"
DEFAULT_MODELS = (
    "yolact_r50:550",
    "yolact_nano:640",
    "yolact_nano:640:10",
    "yolact_nano:640:100:compile",
    "yolact_nano:640:10:compile",
    "mask_rcnn_r50_fpn:640",
)
REFERENCE = (
    "Reference, measured earlier on this machine (640 x 640, batch 1, 2 threads, eager): "
    "Ultralytics YOLO11n-seg, 2.87 M params, 9.8 GFLOPs, network forward 60.8 ms, end to end "
    "82.7 ms. The goal for `yolact_nano`: network <= 48.6 ms and end to end <= 66 ms (0.8x)."
)


def model_spec(text: str) -> tuple[str, int, int, bool]:
    """`NAME:IMGSZ[:DETECTIONS[:compile]]` -> (name, imgsz, forced detections (default 100),
    whether to torch.compile the network)."""
    name, *fields = text.split(":")
    compile = len(fields) == 3 and fields[2] == "compile"
    if compile:
        fields.pop()
    if not 1 <= len(fields) <= 2 or not all(n.isdigit() and int(n) > 0 for n in fields):
        raise argparse.ArgumentTypeError(
            "expected NAME:IMGSZ[:DETECTIONS[:compile]], e.g. yolact_nano:640, "
            f"yolact_nano:640:10 or yolact_nano:640:10:compile, got {text!r}"
        )
    return name, int(fields[0]), int(fields[1]) if len(fields) == 2 else 100, compile


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    for name, imgsz, detections, compile in args.model:
        if name not in MODELS:
            print(f"note: {name} is not in the zoo yet; skipped", flush=True)
            continue
        torch.manual_seed(0)
        model = build_model(name, args.num_classes, min_size=imgsz, max_size=imgsz)
        result = benchmark(
            model,
            imgsz=imgsz,
            threads=args.threads,
            runs=args.runs,
            warmup=args.warmup,
            batch=args.batch,
            compile=compile or args.compile,
            optimize=not args.no_optimize,
            detections=detections,
        )
        result["model"] = name
        result["compile_requested"] = compile or args.compile
        rows.append(result)
        print(table_row(result), flush=True)
    return rows


HEADER = (
    "| model | network | imgsz | params (M) | GFLOPs | median ms | p90 ms | preprocess ms "
    "| network ms | postprocess ms | images/s (batch) | detections |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def table_row(result: dict) -> str:
    latency = result["latency_ms"]
    return (
        f"| `{result['model']}` | {'compiled' if result['compiled'] else 'eager'} "
        f"| {result['imgsz']} | {result['params'] / 1e6:.2f} "
        f"| {result['gflops']:.1f} | {latency['median']:.1f} | {latency['p90']:.1f} "
        f"| {latency['preprocess']:.1f} | {latency['network']:.1f} "
        f"| {latency['postprocess']:.1f} | {result['throughput_ips']:.2f} ({result['batch']}) "
        f"| {result['detections']} |"
    )


def section(rows: list[dict], args: argparse.Namespace) -> str:
    command = ".venv/bin/python benchmarks/model_latency.py " + " ".join(sys.argv[1:])
    variant = "optimize_for_inference" if not args.no_optimize else "as built"
    variant += ", every network under torch.compile" if args.compile else ""
    failed = [row["model"] for row in rows if row["compile_requested"] and not row["compiled"]]
    lines = [
        SECTION,
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {cpu_name()}, {args.threads} threads; torch {torch.__version__}; load "
        f"average {os.getloadavg()[0]:.1f} at the end (other jobs share this machine).",
        "",
        f"Random weights (seed 0), {args.num_classes} classes, one random uint8 image of imgsz x "
        f"imgsz run at imgsz; {variant}; score threshold 0 and at most 100 detections per "
        f"image (or the count in the last column); median and p90 of {args.runs} end-to-end "
        f"calls after {args.warmup} warm-up calls, stage medians from the same calls; "
        f"throughput over batches of {args.batch}.",
        "",
        HEADER,
        *[table_row(row) for row in rows],
        "",
        REFERENCE,
    ]
    if failed:
        lines += ["", f"torch.compile failed for {', '.join(failed)}: those rows ran eagerly."]
    if args.note:
        lines += ["", args.note.strip()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        nargs="+",
        type=model_spec,
        default=[model_spec(spec) for spec in DEFAULT_MODELS],
        metavar="NAME:IMGSZ[:DETECTIONS[:compile]]",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--no-optimize", action="store_true")
    parser.add_argument("--note", default="", help="a paragraph to add under the table")
    parser.add_argument("--write", action="store_true", help=f"write '{SECTION}' to RESULTS.md")
    args = parser.parse_args()
    print(HEADER)
    rows = run(args)
    if args.write:
        write_section(SECTION, section(rows, args))
        print(f"wrote {SECTION!r} to {RESULTS}")


if __name__ == "__main__":
    main()
