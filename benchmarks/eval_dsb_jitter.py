"""`instaseg eval` on all of DSB2018 against a jittered copy of its own ground truth.

Run: .venv/bin/python benchmarks/eval_dsb_jitter.py [--out runs/eval_dsb]

Converts ../shared/data/dsb2018/stage1_train to COCO json with the masks-folder reader, makes
results from it with tests/eval_synthetic.jitter_results (each nucleus shifted by up to 1 px and
maybe eroded or dilated, 10% dropped, 15% false-positive blobs, random scores favouring true
objects), and runs `instaseg eval --metrics coco cells --plots` through the CLI. The numbers
must be below 1 and sensible: this checks the whole path on real data, not a model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from eval_synthetic import jitter_results  # noqa: E402

from instaseg.cli import main as instaseg  # noqa: E402
from instaseg.data.formats import read_dataset, write_coco  # noqa: E402

DSB = ROOT.parent / "shared" / "data" / "dsb2018" / "stage1_train"


def run(out: Path, max_dets: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    gt = write_coco(read_dataset("masks", DSB), out / "dsb_gt.json", overwrite=True)
    converted = time.perf_counter() - start
    results = jitter_results(gt, seed=2018, max_shift=1)
    (out / "dsb_results.json").write_text(json.dumps(results))
    start = time.perf_counter()
    argv = ["eval", "--gt", str(out / "dsb_gt.json"), "--pred", str(out / "dsb_results.json")]
    argv += ["--metrics", "coco", "cells", "--max-dets", str(max_dets)]
    argv += ["--out", str(out / "metrics.json"), "--plots", str(out / "plots")]
    code = instaseg(argv)
    print(f"converted in {converted:.0f} s, evaluated in {time.perf_counter() - start:.0f} s")
    sys.exit(code)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "eval_dsb")
    parser.add_argument("--max-dets", type=int, default=100, help="COCO maxDets (per class)")
    args = parser.parse_args()
    if not DSB.is_dir():
        sys.exit(f"{DSB} not found: this benchmark needs ../shared/data")
    run(args.out, args.max_dets)
