"""The demo job on generated data: what `make demo` runs.

Today it is the data part of the pipeline: generate the synthetic dataset, report its
statistics, and render ground-truth overlays. Everything lands under one output folder that
the demo owns (re-running replaces what an earlier demo wrote there, nothing else).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tqdm import tqdm

from instaseg.data.config import load_data_config
from instaseg.data.stats import dataset_stats, format_stats
from instaseg.data.synth import generate_synthetic
from instaseg.visualize import save_overlay

logger = logging.getLogger(__name__)


def run_demo(
    out_dir: str | Path,
    *,
    num_train: int = 200,
    num_val: int = 50,
    image_size: tuple[int, int] = (256, 256),
    num_overlays: int = 12,
    seed: int = 0,
) -> dict:
    """Run the demo into out_dir; returns the summary it prints (also saved as summary.json)."""
    out_dir = Path(out_dir)
    config_path = generate_synthetic(
        out_dir / "data",
        num_train=num_train,
        num_val=num_val,
        seed=seed,
        image_size=image_size,
        overwrite=True,  # the demo's own folder
    )
    config = load_data_config(config_path)
    summary = {"data": str(config_path), "splits": {}}
    for split in config.splits:
        dataset = config.dataset(split)
        stats = dataset_stats(dataset)
        print(format_stats(stats, title=f"== synthetic {split}"), end="\n\n")
        overlay_dir = out_dir / "overlays" / split
        for index in tqdm(
            range(min(num_overlays, len(dataset))), desc=f"overlays {split}", unit="img"
        ):
            image, instances = dataset[index]
            name = Path(dataset.records[index].file_name).stem
            save_overlay(overlay_dir / f"{name}.png", image, instances, dataset.class_names)
        summary["splits"][split] = {
            "images": stats.num_images,
            "instances": stats.num_instances,
            "overlays": str(overlay_dir),
        }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(format_summary(summary))
    return summary


def format_summary(summary: dict) -> str:
    lines = ["", "demo summary", f"  dataset   {summary['data']}"]
    for split, info in summary["splits"].items():
        lines.append(
            f"  {split:<9} {info['images']} images, {info['instances']} instances, "
            f"overlays in {info['overlays']}"
        )
    return "\n".join(lines)
