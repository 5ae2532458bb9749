"""Inference latency and throughput of a detector, stage by stage: `instaseg bench`.

`benchmark(model)` times the three inference stages every detector exposes:
`preprocess(images) -> batch` (resize, normalise, pad), `infer(batch) -> raw` (the network)
and `postprocess(raw, batch) -> list[Instances]` (decoding, NMS where the model puts it there,
masks pasted in the original frame). Latency is end to end for one image; the stage figures
are medians of the same runs, each stage timed on its own (synchronised on a GPU).

Untrained models score at random, so by default the benchmark forces the worst case for
post-processing: score threshold 0 and `detections` detections per image, and it reports how
many came out. Mask R-CNN's NMS sits in `infer`, YOLACT's in `postprocess`.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from instaseg.models.optimize import optimize_for_inference
from instaseg.models.zoo import model_info

STAGES = ("preprocess", "infer", "postprocess")


def benchmark(
    model: nn.Module,
    *,
    imgsz: int = 640,
    device: str | torch.device = "cpu",
    threads: int = 2,
    runs: int = 20,
    warmup: int = 5,
    batch: int = 8,
    compile: bool = False,
    optimize: bool = True,
    detections: int | None = 100,
) -> dict[str, Any]:
    """Params, GFLOPs, latency and throughput of `model` on imgsz x imgsz uint8 images.

    Latency ("latency_ms"): median and 90th percentile of `runs` end-to-end calls on one
    image after `warmup` calls, plus the median of each stage in those calls ("preprocess",
    "network" for `infer`, "postprocess"). Throughput ("throughput_ips"): images per second
    over max(2, runs // 4) calls on `batch` images, after one warm-up call (two when compiled:
    a new batch size recompiles).
    threads: torch's intra-op threads during the measurement (restored afterwards).
    optimize: time `models.optimize.optimize_for_inference(model)` (folded norms,
        channels-last); the model passed is left as it is.
    compile: wrap the network stage in torch.compile with frozen weights (it needs a C++
        compiler on the CPU); if compiling fails, the benchmark warns and runs eagerly, with
        "compiled": False.
    detections: None keeps the model's score threshold; an int forces score threshold 0 and
        at most that many detections per image (`detections_per_image`, wherever the model
        keeps it), the most an untrained model can give. "detections" in the result is the
        number the timed single-image calls produced.
    params and gflops come from `models.zoo.model_info` at imgsz (on the model as passed).
    The model is moved to `device`; its train/eval mode is restored afterwards.
    """
    _check_arguments(model, imgsz, threads, runs, warmup, batch, detections)
    device = _device(device)
    was_training = model.training
    model = model.to(device)
    info = model_info(model, image_size=imgsz)
    timed = optimize_for_inference(model) if optimize else model.eval()
    try:
        measured = _measure(timed, imgsz, device, threads, runs, warmup, batch, compile, detections)
    finally:
        model.train(was_training)
    times, batch_seconds, batch_runs, last = measured
    totals = [sum(t.values()) for t in times]
    return {
        "model": type(model).__name__,
        "params": info["params"],
        "gflops": info["gflops"],
        "latency_ms": {
            "median": 1000 * statistics.median(totals),
            "p90": 1000 * _percentile(totals, 0.9),
            "preprocess": 1000 * statistics.median(t["preprocess"] for t in times),
            "network": 1000 * statistics.median(t["infer"] for t in times),
            "postprocess": 1000 * statistics.median(t["postprocess"] for t in times),
        },
        "throughput_ips": batch * batch_runs / batch_seconds,
        "imgsz": imgsz,
        "network_size": last["network_size"],
        "batch": batch,
        "runs": runs,
        "warmup": warmup,
        "threads": threads,
        "device": str(device),
        "cpu": cpu_name(),
        "optimized": optimize,
        "compiled": last["compiled"],
        "detections": last["detections"],
        "forced_detections": detections,
        "torch": torch.__version__,
    }


def _measure(
    model: nn.Module,
    imgsz: int,
    device: torch.device,
    threads: int,
    runs: int,
    warmup: int,
    batch: int,
    compile: bool,
    detections: int | None,
) -> tuple[list[dict[str, float]], float, int, dict[str, Any]]:
    """Stage seconds of the timed single-image calls, seconds of the timed batch calls and
    their number, and facts of the last single-image call (detections, network size,
    whether the network stage compiled)."""
    generator = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 256, (3, imgsz, imgsz), dtype=torch.uint8, generator=generator)
        for _ in range(batch)
    ]
    with _threads(threads), _forced_detections(model, detections), torch.inference_mode():
        infer, compiled = _network_stage(model, images, compile)
        stages = _Stages(model, infer, device)
        for _ in range(warmup):
            stages.run(images[:1])
        times = [stages.run(images[:1]) for _ in range(runs)]
        last = {
            "detections": len(stages.last_output[0]),
            "network_size": list(stages.last_network_size),
            "compiled": compiled,
        }
        for _ in range(2 if compiled else 1):  # warm-up at the batch size (recompiles)
            stages.run(images)
        batch_runs = max(2, runs // 4)
        batch_seconds = sum(sum(stages.run(images).values()) for _ in range(batch_runs))
    return times, batch_seconds, batch_runs, last


class _Stages:
    """Times preprocess, the network stage and postprocess of one call separately."""

    def __init__(self, model: nn.Module, infer: Callable[[Any], Any], device: torch.device):
        self.model, self.infer, self.device = model, infer, device
        self.last_output: list = []
        self.last_network_size: tuple[int, ...] = ()

    def run(self, images: list[Tensor]) -> dict[str, float]:
        """Seconds per stage of one call on `images`."""
        seconds = {}
        start = self._now()
        batch = self.model.preprocess(images)
        seconds["preprocess"], start = self._since(start)
        raw = self.infer(batch)
        seconds["infer"], start = self._since(start)
        self.last_output = self.model.postprocess(raw, batch)
        seconds["postprocess"], _ = self._since(start)
        self.last_network_size = tuple(batch.tensors[0].shape[-2:])
        return seconds

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _since(self, start: float) -> tuple[float, float]:
        now = self._now()
        return now - start, now


def _network_stage(
    model: nn.Module, images: list[Tensor], compile: bool
) -> tuple[Callable[[Any], Any], bool]:
    """model.infer, or its torch.compile'd form when `compile` and compiling works (tried on
    one image and on the whole batch, which recompiles, so that a failure shows here rather
    than in the timed runs)."""
    if not compile:
        return model.infer, False
    try:
        # freezing: the weights become constants of the graph, so that inductor can prepack
        # them for oneDNN and fuse each conv with the ReLU after it (~20% off yolact_nano's
        # CPU forward); the benchmark never changes the weights
        compiled = torch.compile(model.infer, options={"freezing": True})
        compiled(model.preprocess(images[:1]))
        if len(images) > 1:
            compiled(model.preprocess(images))
    except Exception as error:  # any backend failure (no compiler, unsupported op) falls back
        warnings.warn(
            f"torch.compile failed ({type(error).__name__}: {_first_line(error)}); "
            "benchmarking the eager network instead",
            RuntimeWarning,
            stacklevel=3,
        )
        return model.infer, False
    return compiled, True


@contextlib.contextmanager
def _threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _forced_detections(model: nn.Module, detections: int | None) -> Iterator[None]:
    """Score threshold 0 and `detections_per_image` = detections inside the block (both
    restored afterwards); nothing changes when detections is None."""
    if detections is None:
        yield
        return
    if not hasattr(model, "score_threshold"):
        raise TypeError(
            f"{type(model).__name__} has no `score_threshold`, so detections cannot be forced; "
            "pass detections=None"
        )
    holder = next((m for m in model.modules() if hasattr(m, "detections_per_image")), None)
    saved = (model.score_threshold, getattr(holder, "detections_per_image", None))
    model.score_threshold = 0.0
    if holder is not None:
        holder.detections_per_image = detections
    try:
        yield
    finally:
        model.score_threshold = saved[0]
        if holder is not None:
            holder.detections_per_image = saved[1]


def _device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise ValueError(
            f"device must be like 'cpu', 'cuda' or 'cuda:0', got {device!r}"
        ) from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device is {device} but CUDA is not available in this torch build")
    return device


def _check_arguments(
    model: nn.Module,
    imgsz: int,
    threads: int,
    runs: int,
    warmup: int,
    batch: int,
    detections: int | None,
) -> None:
    missing = [name for name in STAGES if not callable(getattr(model, name, None))]
    if not isinstance(model, nn.Module) or missing:
        raise TypeError(
            f"model must be a detector with preprocess, infer and postprocess methods, got "
            f"{type(model).__name__}" + (f" (no {', '.join(missing)})" if missing else "")
        )
    for name, value, least in (
        ("imgsz", imgsz, 1),
        ("threads", threads, 1),
        ("runs", runs, 1),
        ("warmup", warmup, 0),
        ("batch", batch, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    if detections is not None and (
        isinstance(detections, bool) or not isinstance(detections, int) or detections < 1
    ):
        raise ValueError(f"detections must be a positive int or None, got {detections!r}")


def _percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux) and the cores this process sees."""
    name = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {_visible_cores()} cores"


def _visible_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: the cores this process may run on
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def format_report(result: dict[str, Any]) -> str:
    """A readable table of `benchmark`'s result."""
    latency = result["latency_ms"]
    forced = result.get("forced_detections")
    threshold = (
        "model's threshold" if forced is None else f"forced, score threshold 0, max {forced}"
    )
    variant = ", ".join(
        ["optimized" if result["optimized"] else "as built"]
        + ["compiled" if result["compiled"] else "eager"]
    )
    rows = [
        ("model", f"{result['model']} ({variant})"),
        ("params", f"{result['params'] / 1e6:.2f} M"),
        (f"GFLOPs @{result['imgsz']}", f"{result['gflops']:.1f}"),
        ("latency median", f"{latency['median']:.1f} ms (p90 {latency['p90']:.1f} ms)"),
        ("  preprocess", f"{latency['preprocess']:.1f} ms"),
        ("  network", f"{latency['network']:.1f} ms"),
        ("  postprocess", f"{latency['postprocess']:.1f} ms"),
        ("throughput", f"{result['throughput_ips']:.2f} images/s (batch {result['batch']})"),
        ("detections", f"{result['detections']} per image ({threshold})"),
        (
            "input",
            f"{result['imgsz']}x{result['imgsz']} uint8, network at "
            f"{'x'.join(str(s) for s in result['network_size'])}",
        ),
        (
            "machine",
            f"{result['device']}, {result['threads']} thread"
            f"{'' if result['threads'] == 1 else 's'}, {result['cpu']}, "
            f"torch {result['torch']}",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
