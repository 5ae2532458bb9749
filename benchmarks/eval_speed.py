"""Segm evaluation wall time: instaseg.eval.evaluate against pycocotools' COCOeval.

Run: .venv/bin/python benchmarks/eval_speed.py [--images 5000] [--dets 20] [--repeat 1] [--write]

Generates a COCO-val-like ground truth (images 256-640 px, 2-12 objects each, 80 classes,
some crowd regions) and results with `--dets` detections per image (jittered objects and false
positives, compressed RLE plus bbox, as detectors write them), saves both as json, then times
each evaluator end to end from the two files to the 12 stats: pycocotools' COCO + loadRes +
evaluate + accumulate + summarize, and `evaluate(gt, results, iou_types=("segm",))`. Checks
that the 12 stats agree to 1e-9. With --write, puts the figures in benchmarks/RESULTS.md under
"## Evaluation speed" (replacing only that section).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pycocotools.mask as coco_mask

SECTION = "## Evaluation speed"
NUM_CLASSES = 80  # as in COCO


def ellipse_rle(
    size: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float]
) -> dict:
    """Compressed RLE (str counts) of a filled axis-aligned ellipse, built column by column
    (pixel centres inside), so no full-image mask is ever allocated."""
    height, width = size
    cy, cx = centre
    ry, rx = radii
    cols = np.arange(max(0, int(cx - rx)), min(width, int(cx + rx) + 2))
    half = ry * np.sqrt(np.clip(1 - ((cols + 0.5 - cx) / rx) ** 2, 0, None))
    top = np.clip(np.ceil(cy - half - 0.5), 0, height).astype(np.int64)
    bottom = np.clip(np.floor(cy + half - 0.5) + 1, 0, height).astype(np.int64)
    keep = (bottom > top) & (half > 0)
    cols, top, bottom = cols[keep], top[keep], bottom[keep]
    if cols.size == 0:  # too thin to cover a pixel centre: one pixel
        cols = np.array([min(max(int(cx), 0), width - 1)])
        top = np.array([min(max(int(cy), 0), height - 1)])
        bottom = top + 1
    starts, ends = cols * height + top, cols * height + bottom  # column-major runs
    counts = np.empty(2 * cols.size + 1, dtype=np.int64)
    counts[0] = starts[0]
    counts[1:-1:2] = ends - starts
    counts[2:-1:2] = starts[1:] - ends[:-1]
    counts[-1] = height * width - ends[-1]
    rle = coco_mask.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def make_data(num_images: int, dets_per_image: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        size = (int(rng.integers(256, 641)), int(rng.integers(256, 641)))
        images.append(
            {"id": image_id, "height": size[0], "width": size[1], "file_name": f"{image_id}.jpg"}
        )
        objects = []
        for _ in range(int(rng.integers(2, 13))):
            centre = (rng.uniform(0, size[0]), rng.uniform(0, size[1]))
            radii = tuple(float(r) for r in rng.choice([4, 12, 40]) * rng.uniform(0.5, 2.0, size=2))
            category_id, crowd = int(rng.integers(1, NUM_CLASSES + 1)), int(rng.random() < 0.03)
            rle = ellipse_rle(size, centre, radii)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "segmentation": rle,
                    "area": float(coco_mask.area(rle)),
                    "bbox": coco_mask.toBbox(rle).tolist(),
                    "iscrowd": crowd,
                }
            )
            objects.append((centre, radii, category_id))
        for k in range(dets_per_image):
            if k < len(objects) and rng.random() < 0.8:
                (cy, cx), (ry, rx), category_id = objects[k]
                centre = (cy + rng.normal(0, 2), cx + rng.normal(0, 2))
                radii = (ry * rng.uniform(0.8, 1.2), rx * rng.uniform(0.8, 1.2))
                score = rng.uniform(0.3, 1.0)
            else:
                centre = (rng.uniform(0, size[0]), rng.uniform(0, size[1]))
                radii = tuple(
                    float(r) for r in rng.choice([4, 12, 40]) * rng.uniform(0.5, 2.0, size=2)
                )
                category_id, score = int(rng.integers(1, NUM_CLASSES + 1)), rng.uniform(0.0, 0.7)
            rle = ellipse_rle(size, centre, radii)
            results.append(
                {
                    "image_id": image_id,
                    "category_id": category_id,
                    "segmentation": rle,
                    "bbox": coco_mask.toBbox(rle).tolist(),
                    "score": round(float(score), 4),
                }
            )
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, NUM_CLASSES + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def time_pycocotools(gt_path: Path, results_path: Path) -> tuple[float, np.ndarray]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        e = COCOeval(coco_gt, coco_gt.loadRes(str(results_path)), "segm")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return time.perf_counter() - start, np.asarray(e.stats)


def time_instaseg(gt_path: Path, results_path: Path) -> tuple[float, np.ndarray]:
    from instaseg.eval import evaluate

    start = time.perf_counter()
    result = evaluate(gt_path, results_path, iou_types=("segm",))
    elapsed = time.perf_counter() - start
    return elapsed, np.array([-1.0 if v is None else v for v in result.metrics["segm"].values()])


def machine() -> str:
    from importlib import metadata

    import faster_coco_eval
    import torch

    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"model name\s*:\s*(.+)", text)
        model = found.group(1).strip() if found else model
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = (
        f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"pycocotools {metadata.version('pycocotools')}, "
        f"faster-coco-eval {faster_coco_eval.__version__}"
    )
    return f"{model}, {cores} cores available; {versions}"


def write_section(text: str, path: Path) -> None:
    """Replace (or append) our section of RESULTS.md; other sections stay as they are."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = text.rstrip("\n") + "\n\n"  # a blank line before whatever section follows
    new = (
        pattern.sub(lambda _: text, old)
        if pattern.search(old)
        else old.rstrip("\n") + "\n\n" + text
    )
    path.write_text(new.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets", type=int, default=20, help="detections per image")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best counts")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    start = time.perf_counter()
    gt, results = make_data(args.images, args.dets)
    print(
        f"generated {len(gt['images'])} images, {len(gt['annotations'])} objects, "
        f"{len(results)} detections in {time.perf_counter() - start:.1f} s"
    )
    with tempfile.TemporaryDirectory() as folder:
        gt_path, results_path = Path(folder) / "gt.json", Path(folder) / "results.json"
        gt_path.write_text(json.dumps(gt))
        results_path.write_text(json.dumps(results))
        del gt, results
        ours, theirs = float("inf"), float("inf")
        for run in range(args.repeat):  # alternate, keep each one's best (the machine is shared)
            seconds, our_stats = time_instaseg(gt_path, results_path)
            print(f"run {run + 1}: instaseg.eval.evaluate (faster-coco-eval): {seconds:7.2f} s")
            ours = min(ours, seconds)
            seconds, their_stats = time_pycocotools(gt_path, results_path)
            print(f"run {run + 1}: pycocotools COCOeval:                      {seconds:7.2f} s")
            theirs = min(theirs, seconds)
    difference = float(np.abs(our_stats - their_stats).max())
    print(f"speed-up {theirs / ours:.1f}x; largest stat difference {difference:.1e}")
    print("stats:", " ".join(f"{v:.4f}" for v in our_stats))
    if difference > 1e-9:
        print("the 12 stats differ from pycocotools'", file=sys.stderr)
        return 1
    if args.write:
        options = f"--images {args.images} --dets {args.dets} --repeat {args.repeat} --write"
        command = f".venv/bin/python benchmarks/eval_speed.py {options}"
        write_section(
            _section(args, ours, theirs, difference, our_stats, command),
            Path(__file__).with_name("RESULTS.md"),
        )
        print("updated benchmarks/RESULTS.md")
    return 0


def _section(
    args, ours: float, theirs: float, difference: float, stats: np.ndarray, command: str
) -> str:
    names = "AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs ARm ARl".split()
    table = " | ".join(names)
    values = " | ".join(f"{v:.4f}" for v in stats)
    return (
        f"{SECTION}\n\n"
        f"{args.images:,} images x {args.dets} detections, {NUM_CLASSES} classes (segm, compressed "
        "RLE, images 256-640 px), "
        "end to end from the gt and results json files to the 12 COCO stats.\n\n"
        f"Command: `{command}`\n\n"
        f"Machine: {machine()}\n\n"
        f"| evaluator | wall time (best of {args.repeat}) |\n|---|---|\n"
        f"| pycocotools COCOeval (load + evaluate + accumulate + summarize) | {theirs:.2f} s |\n"
        f'| `instaseg.eval.evaluate(..., iou_types=("segm",))` | {ours:.2f} s |\n\n'
        f"Speed-up: **{theirs / ours:.1f}x**. The 12 stats agree to {difference:.1e}:\n\n"
        f"| {table} |\n|{'---|' * len(names)}\n| {values} |\n"
    )


if __name__ == "__main__":
    sys.exit(main())
