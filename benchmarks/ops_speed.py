"""Time the detection ops on the CPU: nms, roi_align and paste_masks_in_image.

Run: .venv/bin/python benchmarks/ops_speed.py [--threads 2] [--runs 10]
Per case: median and minimum wall time of `runs` calls after two warm-up calls, and the
median CPU time of the process. Boxes are uniformly placed squares-to-rectangles with sides
drawn uniformly from the stated range.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from instaseg.ops import batched_nms, nms, paste_masks_in_image, roi_align


def timed(fn: Callable[[], object], runs: int, warmup: int = 2) -> str:
    """Median and minimum wall time, and median process CPU time (all threads), in ms.

    On a machine shared with other jobs the wall times swing with their load; CPU time is
    the steadier figure (about threads x wall when the op parallelises perfectly)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return (
        f"median {statistics.median(wall) * 1000:8.1f} ms, min {min(wall) * 1000:8.1f} ms "
        f"(cpu {statistics.median(cpu) * 1000:8.1f} ms)"
    )


def random_boxes(
    generator: torch.Generator,
    num: int,
    image_size: tuple[int, int],
    min_side: float,
    max_side: float,
) -> torch.Tensor:
    """float [num, 4] xyxy boxes inside an image of (height, width), sides uniform in
    [min_side, max_side]."""
    limit = torch.tensor([image_size[1], image_size[0]], dtype=torch.float32)
    sides = min_side + torch.rand(num, 2, generator=generator) * (max_side - min_side)
    corner = torch.rand(num, 2, generator=generator) * (limit - sides)
    return torch.cat([corner, corner + sides], dim=1)


def bench_nms(runs: int) -> None:
    generator = torch.Generator().manual_seed(0)
    boxes = random_boxes(generator, 5000, (800, 800), 10.0, 200.0)
    scores = torch.rand(5000, generator=generator)
    labels = torch.randint(0, 80, (5000,), generator=generator)
    for threshold in (0.5, 0.7):
        kept = len(nms(boxes, scores, threshold))
        figures = timed(lambda t=threshold: nms(boxes, scores, t), runs)
        print(f"nms          5000 boxes, iou {threshold} ({kept} kept): {figures}")
    figures = timed(lambda: batched_nms(boxes, scores, labels, 0.5), runs)
    print(f"batched_nms  5000 boxes, 80 classes, iou 0.5: {figures}")


def bench_roi_align(runs: int) -> None:
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(1, 256, 200, 200, generator=generator)
    # an 800 x 800 image at stride 4. Sides of 16..112 px are 4..28 feature px, the range
    # FPN's level rule sends to a level; 16..256 px (up to 64 feature px) is a heavier mix
    for low, high in ((16.0, 112.0), (16.0, 256.0)):
        boxes = random_boxes(generator, 512, (800, 800), low, high)
        for output_size in (7, 14):
            for ratio in (2, -1):
                figures = timed(
                    lambda o=output_size, r=ratio, b=boxes: roi_align(features, [b], o, 0.25, r),
                    runs,
                )
                print(
                    f"roi_align    512 RoIs {low:.0f}-{high:.0f} px, {output_size}x{output_size}, "
                    f"sampling_ratio {ratio:2d}: {figures}"
                )


def bench_paste(runs: int) -> None:
    generator = torch.Generator().manual_seed(2)
    probs = torch.rand(100, 28, 28, generator=generator)
    for height, width in ((640, 640), (1040, 1388)):
        boxes = random_boxes(generator, 100, (height, width), 20.0, 400.0)
        figures = timed(lambda b=boxes, s=(height, width): paste_masks_in_image(probs, b, s), runs)
        print(f"paste        100 masks 28x28 into {height}x{width}: {figures}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.runs} runs each")
    print("nms: boxes of 10-200 px in 800x800, random scores")
    print("roi_align: 256 channels, one 200x200 map at stride 4 (an 800x800 image)")
    print("paste: boxes of 20-400 px")
    bench_nms(args.runs)
    bench_roi_align(args.runs)
    bench_paste(args.runs)


if __name__ == "__main__":
    main()
