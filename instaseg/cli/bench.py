"""`instaseg bench`: params, GFLOPs, latency per stage and throughput of one model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from instaseg.api import load_model
from instaseg.bench import benchmark, format_report
from instaseg.cli.common import choice
from instaseg.models.zoo import MODELS, build_model


def add_bench_command(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench", help="latency (per stage), throughput, params and GFLOPs of a model"
    )
    source = bench.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        type=choice(tuple(MODELS)),
        help="zoo name: random weights (seed 0), run at imgsz x imgsz",
    )
    source.add_argument(
        "--weights", help="a checkpoint (.safetensors); it keeps its own input size"
    )
    bench.add_argument("--imgsz", type=int, default=640, help="side of the square input image")
    bench.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    bench.add_argument("--threads", type=int, default=2, help="torch intra-op threads (2)")
    bench.add_argument("--compile", action="store_true", help="torch.compile the network stage")
    bench.add_argument("--json", metavar="OUT", help="write the result as json")
    bench.add_argument("--runs", type=int, default=20, help="timed single-image calls (20)")
    bench.add_argument("--warmup", type=int, default=5, help="untimed calls first (5)")
    bench.add_argument("--batch", type=int, default=8, help="batch size for throughput (8)")
    bench.add_argument(
        "--num-classes", type=int, default=80, help="classes of a --model network (80)"
    )
    bench.add_argument(
        "--no-optimize",
        action="store_true",
        help="time the model as built, without optimize_for_inference",
    )
    forced = bench.add_mutually_exclusive_group()
    forced.add_argument(
        "--detections",
        type=int,
        default=100,
        metavar="N",
        help="force N detections per image: score threshold 0, at most N (default 100)",
    )
    forced.add_argument(
        "--natural-threshold",
        action="store_true",
        help="keep the model's score threshold and detection limit",
    )
    bench.set_defaults(handler=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    if args.model:
        if args.num_classes < 1:
            raise ValueError(f"--num-classes must be positive, got {args.num_classes}")
        if args.imgsz < 1:
            raise ValueError(f"--imgsz must be positive, got {args.imgsz}")
        torch.manual_seed(0)
        network = build_model(
            args.model, args.num_classes, min_size=args.imgsz, max_size=args.imgsz
        )
        name = args.model
    else:
        network = load_model(args.weights).network
        name = args.weights
    result = benchmark(
        network,
        imgsz=args.imgsz,
        device=args.device,
        threads=args.threads,
        runs=args.runs,
        warmup=args.warmup,
        batch=args.batch,
        compile=args.compile,
        optimize=not args.no_optimize,
        detections=None if args.natural_threshold else args.detections,
    )
    result["model"] = name
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
