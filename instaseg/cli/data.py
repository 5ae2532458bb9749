"""`instaseg data {convert,stats,show,split,synth}` and `instaseg demo`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import yaml
from tqdm import tqdm

from instaseg.cli.common import choice
from instaseg.data.config import find_config, load_data_config, resolve_dataset
from instaseg.data.dataset import InstanceDataset
from instaseg.data.errors import DataError
from instaseg.data.formats import FORMATS, read_dataset, write_coco
from instaseg.data.split import split_dataset
from instaseg.data.stats import dataset_stats, format_stats
from instaseg.data.synth import generate_synthetic
from instaseg.demo import DEMO_MODEL, DEMO_TRAIN_MINUTES, run_demo
from instaseg.models.zoo import MODELS
from instaseg.visualize import save_overlay


def add_data_commands(commands: argparse._SubParsersAction) -> None:
    """`instaseg data {convert,stats,show,split,synth}`."""
    data = commands.add_parser("data", help="convert, inspect, split and generate datasets")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    convert = sub.add_parser("convert", help="convert a dataset to COCO json")
    convert.add_argument(
        "--from", dest="fmt", required=True, type=choice(FORMATS), help="source format"
    )
    convert.add_argument("src", help="source file or folder (yaml/json/root, as the format needs)")
    convert.add_argument(
        "--to", dest="target", default="coco", type=choice(("coco",)), help="target format"
    )
    convert.add_argument("out", help="output COCO json; file_name paths are relative to SRC")
    convert.add_argument("--names", nargs="+", help="class names, where the format has none")
    convert.add_argument("--split", default="train", help="yolo: which split of the data yaml")
    convert.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    _add_skip_bad(convert)
    convert.set_defaults(handler=_run_data_convert)

    stats = sub.add_parser("stats", help="images, instances per class, sizes, histogram")
    _add_data_argument(stats)
    stats.add_argument("--json", metavar="OUT", help="also write the statistics as json")
    stats.set_defaults(handler=_run_data_stats)

    show = sub.add_parser("show", help="write overlay PNGs with class names and colours")
    _add_data_argument(show)
    show.add_argument("--out", required=True, help="folder for the PNGs")
    show.add_argument("--num", type=int, default=16, help="how many images (default 16; 0 = all)")
    show.add_argument("--color-by", default="class", type=choice(("class", "instance")))
    show.add_argument("--overwrite", action="store_true", help="replace existing PNGs in --out")
    show.set_defaults(handler=_run_data_show)

    split = sub.add_parser(
        "split", help="deterministic train/val split into COCO jsons + data.yaml"
    )
    _add_data_argument(split, default_split="train")
    split.add_argument("--val", type=float, default=0.2, help="fraction for val (default 0.2)")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--out", required=True, help="folder for train.json, val.json, data.yaml")
    split.add_argument("--overwrite", action="store_true", help="replace existing files in --out")
    split.set_defaults(handler=_run_data_split)

    synth = sub.add_parser("synth", help="generate the synthetic shapes dataset")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--train", type=int, default=200, help="train images (default 200)")
    synth.add_argument("--val", type=int, default=50, help="val images (default 50)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    synth.add_argument(
        "--overwrite", action="store_true", help="replace files in a non-empty --out"
    )
    synth.set_defaults(handler=_run_data_synth)


def _add_data_argument(parser: argparse.ArgumentParser, default_split: str | None = None) -> None:
    parser.add_argument(
        "data", metavar="DATA", help="dataset yaml, folder with data.yaml, or COCO json"
    )
    parser.add_argument(
        "--split",
        default=default_split,
        help="which split of a yaml (default: every split)"
        if default_split is None
        else "which split",
    )
    _add_skip_bad(parser)


def _add_skip_bad(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-bad", action="store_true", help="warn and skip unreadable images")


def _datasets(args: argparse.Namespace) -> list[tuple[str, InstanceDataset]]:
    """(split name, dataset) pairs for a DATA argument: one split or all of a yaml's."""
    spec = Path(args.data)
    config_path = find_config(spec)
    if config_path is None:
        return [(spec.name, resolve_dataset(spec, skip_bad=args.skip_bad))]
    config = load_data_config(config_path)
    splits = [args.split] if args.split else list(config.splits)
    return [(s, config.dataset(s, skip_bad=args.skip_bad)) for s in splits]


def _run_data_convert(args: argparse.Namespace) -> int:
    src, out = Path(args.src), Path(args.out)
    if out.exists() and not args.overwrite:
        raise DataError(out, "already exists; pass --overwrite to replace it")
    kwargs = {"split": args.split} if args.fmt == "yolo" else {}
    dataset = read_dataset(args.fmt, src, skip_bad=args.skip_bad, names=args.names, **kwargs)
    src_dir = src if src.is_dir() else src.parent
    prefix = os.path.relpath(dataset.image_root.absolute(), src_dir.absolute())
    write_coco(
        dataset, out, file_name_prefix=None if prefix == "." else prefix, overwrite=args.overwrite
    )
    print(
        f"wrote {out}: {len(dataset)} images, {dataset.num_instances()} instances, "
        f"{dataset.num_classes} classes; file_name is relative to {src_dir}"
    )
    return 0


def _run_data_stats(args: argparse.Namespace) -> int:
    report = {}
    for split, dataset in _datasets(args):
        stats = dataset_stats(dataset)
        print(format_stats(stats, title=f"== {split}: {dataset.source}"), end="\n\n")
        report[split] = stats.to_dict()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _run_data_show(args: argparse.Namespace) -> int:
    out = Path(args.out)
    for split, dataset in _datasets(args):
        count = len(dataset) if args.num <= 0 else min(args.num, len(dataset))
        targets = [out / split / f"{Path(r.file_name).stem}.png" for r in dataset.records[:count]]
        existing = [t for t in targets if t.exists()]
        if existing and not args.overwrite:
            raise DataError(existing[0], "already exists; pass --overwrite to replace the overlays")
        for index, target in enumerate(tqdm(targets, desc=f"overlays {split}", unit="img")):
            image, instances = dataset[index]
            save_overlay(target, image, instances, dataset.class_names, color_by=args.color_by)
        print(f"wrote {count} overlays to {out / split}")
    return 0


def _run_data_split(args: argparse.Namespace) -> int:
    out = Path(args.out)
    targets = {name: out / f"{name}.json" for name in ("train", "val")}
    existing = [p for p in [*targets.values(), out / "data.yaml"] if p.exists()]
    if existing and not args.overwrite:
        raise DataError(existing[0], "already exists; pass --overwrite to replace the split")
    [(_, dataset)] = _datasets(args)  # --split defaults to train: always one
    train, val = split_dataset(dataset, args.val, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("val", val)):
        write_coco(part, targets[name], overwrite=args.overwrite)
    images = os.path.relpath(dataset.image_root.absolute(), out.absolute())
    config = {
        "format": "coco",
        "train": {"json": "train.json", "images": images},
        "val": {"json": "val.json", "images": images},
        "names": dataset.class_names,
    }
    (out / "data.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    summary = f"train {len(train)} images, val {len(val)} images (seed {args.seed})"
    print(f"{summary} -> {out / 'data.yaml'}")
    return 0


def _run_data_synth(args: argparse.Namespace) -> int:
    config = generate_synthetic(
        args.out,
        num_train=args.train,
        num_val=args.val,
        seed=args.seed,
        image_size=tuple(args.size),
        overwrite=args.overwrite,
    )
    print(f"wrote {config}")
    return 0


def add_demo_command(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo", help="the main job on generated data (what `make demo` runs)"
    )
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument("--train", type=int, default=200, help="synthetic train images")
    demo.add_argument("--val", type=int, default=50, help="synthetic val images")
    demo.add_argument(
        "--minutes",
        type=float,
        default=DEMO_TRAIN_MINUTES,
        help=f"training budget in minutes (default {DEMO_TRAIN_MINUTES:g}; 0: data only)",
    )
    demo.add_argument(
        "--model", default=DEMO_MODEL, type=choice(tuple(MODELS)), help=f"default {DEMO_MODEL}"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    if args.minutes < 0:
        raise ValueError(f"--minutes must be >= 0, got {args.minutes}")
    run_demo(
        args.out,
        num_train=args.train,
        num_val=args.val,
        train_minutes=args.minutes,
        model=args.model,
        seed=args.seed,
    )
    return 0
