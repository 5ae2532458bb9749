"""`instaseg train | val | predict | models | convert`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from tqdm import tqdm

from instaseg.api import Model, load_model
from instaseg.cli.common import choice
from instaseg.data.errors import DataError
from instaseg.data.transforms import TRAIN_SCALE_RANGE
from instaseg.eval.report import format_coco, format_per_class
from instaseg.models.convert import convert_checkpoint
from instaseg.models.zoo import MODELS, build_model, model_info
from instaseg.visualize import save_overlay

DEFAULT_MODEL = "mask_rcnn_r18_fpn"


def add_model_commands(commands: argparse._SubParsersAction) -> None:
    _add_train(commands)
    _add_val(commands)
    _add_predict(commands)
    listing = commands.add_parser("models", help="list the model zoo with params and GFLOPs")
    listing.add_argument("--imgsz", type=int, default=640, help="image side for GFLOPs")
    listing.add_argument("--num-classes", type=int, default=80)
    listing.set_defaults(handler=_run_models)
    convert = commands.add_parser("convert", help="convert another library's checkpoint")
    convert.add_argument(
        "--from", dest="source_format", required=True, type=choice(("torchvision",))
    )
    convert.add_argument("src", help="the checkpoint (e.g. torchvision maskrcnn_resnet50_fpn .pth)")
    convert.add_argument("out", help="output .safetensors (a .json with the metadata goes beside)")
    convert.add_argument("--overwrite", action="store_true")
    convert.set_defaults(handler=_run_convert)


def _add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train a model from scratch or from weights")
    source = train.add_mutually_exclusive_group()
    source.add_argument(
        "--model", type=choice(tuple(MODELS)), help=f"zoo name (default {DEFAULT_MODEL})"
    )
    source.add_argument("--weights", help="start from a checkpoint (.safetensors)")
    train.add_argument("--data", required=True, help="dataset yaml or a folder with data.yaml")
    train.add_argument(
        "--model-opt",
        action="append",
        default=[],
        type=model_option,
        metavar="KEY=VALUE",
        help="a model builder option, e.g. box_head=2fc (repeatable; new models only)",
    )
    length = train.add_mutually_exclusive_group(required=True)
    length.add_argument("--epochs", type=int, help="number of epochs")
    length.add_argument("--time", type=float, metavar="MIN", help="training budget in minutes")
    train.add_argument("--imgsz", type=int, default=512, help="longer image side (default 512)")
    train.add_argument("--batch", type=int, default=4)
    train.add_argument(
        "--scale-range",
        type=float,
        nargs=2,
        default=TRAIN_SCALE_RANGE,
        metavar=("LOW", "HIGH"),
        help="scale jitter of the training images (default {} {}; 1 1: none)".format(
            *TRAIN_SCALE_RANGE
        ),
    )
    train.add_argument("--workers", type=int, default=2, help="loader processes")
    train.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    train.add_argument(
        "--out", required=True, help="run folder: best/last weights, metrics, curves"
    )
    train.add_argument("--optimizer", default="adamw", type=choice(("adamw", "sgd")))
    train.add_argument("--lr", type=float, help="base learning rate (adamw 2e-4, sgd 0.02)")
    train.add_argument("--amp", type=choice(("bf16", "fp16")), help="mixed precision")
    train.add_argument("--ema", type=float, metavar="DECAY", help="keep an EMA of the weights")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--resume", metavar="STATE", help="continue from OUT/last (its .state.pt)")
    train.add_argument("--skip-bad", action="store_true", help="warn and skip unreadable images")
    train.set_defaults(handler=_run_train)


def _add_val(commands: argparse._SubParsersAction) -> None:
    val = commands.add_parser("val", help="COCO metrics of a checkpoint on a dataset split")
    val.add_argument("--weights", required=True, help="checkpoint (.safetensors)")
    val.add_argument(
        "--data", required=True, help="dataset yaml, folder with data.yaml, or COCO json"
    )
    val.add_argument("--split", default="val")
    val.add_argument("--workers", type=int, default=2)
    val.add_argument("--device", default="cpu")
    val.add_argument("--save-json", metavar="PRED.json", help="write COCO results (the gt's ids)")
    val.add_argument("--out", metavar="METRICS.json", help="write the metrics as json")
    val.set_defaults(handler=_run_val)


def _add_predict(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser("predict", help="predict on images; write overlays and json")
    predict.add_argument("--weights", required=True, help="checkpoint (.safetensors)")
    predict.add_argument("--source", required=True, nargs="+", help="image, folder or glob")
    predict.add_argument("--conf", type=float, default=0.5, help="keep scores >= conf (0.5)")
    predict.add_argument("--save-dir", required=True, help="folder for overlays and results.json")
    predict.add_argument("--device", default="cpu")
    predict.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    predict.set_defaults(handler=_run_predict)


def model_option(text: str) -> tuple[str, object]:
    """`key=value` -> (key, value); the value is read as a YAML scalar (2fc, 128, 0.5, true)."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, (dict, list)) or parsed is None:
        raise argparse.ArgumentTypeError(f"{key}: expected a number, a word or true/false")
    return key, parsed


def _run_train(args: argparse.Namespace) -> int:
    options = dict(args.model_opt)
    if args.weights:
        if options:
            raise ValueError("--model-opt applies to new models; a checkpoint keeps its options")
        model = load_model(args.weights, device=args.device)
    else:
        model = Model(args.model or DEFAULT_MODEL, model_kwargs=options, device=args.device)
    summary = model.train(
        args.data,
        epochs=args.epochs,
        time=args.time,
        imgsz=args.imgsz,
        batch=args.batch,
        workers=args.workers,
        device=args.device,
        out=args.out,
        scale_range=tuple(args.scale_range),
        optimizer=args.optimizer,
        lr=args.lr,
        amp=args.amp,
        ema=args.ema,
        seed=args.seed,
        resume=args.resume,
        skip_bad=args.skip_bad,
    )
    best = summary.get("best_metric")
    best_text = "n/a (no val split)" if best is None else f"{best:.3f}"
    print(
        f"trained {summary['epochs']} epochs ({summary['steps']} steps, "
        f"{summary['elapsed_s'] / 60:.1f} min, {summary['train_images_per_s']:.2f} images/s); "
        f"best mask AP {best_text} -> {Path(args.out) / 'best.safetensors'}"
    )
    return 0


def _run_val(args: argparse.Namespace) -> int:
    model = load_model(args.weights, device=args.device)
    result = model.val(args.data, split=args.split, workers=args.workers, save_json=args.save_json)
    print(format_coco(result))
    print(format_per_class(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    if args.save_json:
        print(f"wrote {args.save_json}")
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    model = load_model(args.weights, device=args.device)
    save_dir = Path(args.save_dir)
    results_path = save_dir / "results.json"
    if results_path.exists() and not args.overwrite:
        raise DataError(results_path, "already exists; pass --overwrite or another --save-dir")
    images, results = [], []
    for image_id, (name, image) in enumerate(tqdm(model.load_sources(args.source), unit="img"), 1):
        (instances,) = model.predict(image, conf=args.conf)
        save_overlay(save_dir / f"{Path(name).stem}.png", image, instances, model.class_names)
        images.append(
            {"id": image_id, "file_name": name, "height": image.shape[1], "width": image.shape[2]}
        )
        results += instances.to_coco(image_id, model.category_ids)
    save_dir.mkdir(parents=True, exist_ok=True)
    (save_dir / "images.json").write_text(json.dumps(images, indent=1))
    results_path.write_text(json.dumps(results))
    print(
        f"{len(images)} images, {len(results)} instances -> {save_dir} (results.json, images.json)"
    )
    return 0


def _run_models(args: argparse.Namespace) -> int:
    print(f"{'model':<32} {'params (M)':>11} {f'GFLOPs @{args.imgsz}':>13}")
    for name in tqdm(MODELS, desc="measuring", leave=False):
        info = model_info(build_model(name, args.num_classes), image_size=args.imgsz)
        tqdm.write(f"{name:<32} {info['params'] / 1e6:>11.2f} {info['gflops']:>13.1f}")
    return 0


def _run_convert(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise DataError(out, "already exists; pass --overwrite to replace it")
    written = convert_checkpoint(args.src, out)
    print(f"wrote {written}")
    return 0
