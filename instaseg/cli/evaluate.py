"""`instaseg eval`: COCO / LVIS AP, cell metrics and panoptic quality of predictions."""

from __future__ import annotations

import argparse
import logging

from instaseg.cli.common import choice


def add_eval_command(commands: argparse._SubParsersAction) -> None:
    """`instaseg eval`."""
    parser = commands.add_parser(
        "eval",
        help="score predictions against ground truth (COCO / LVIS AP, cell metrics, PQ)",
        description="COCO metrics print the 12-number table per IoU type and the per-class AP. "
        "LVIS-style evaluation is used when the gt carries LVIS fields. `--metrics panoptic` "
        "reads COCO panoptic json; its PNGs are next to each json unless given.",
    )
    parser.add_argument("--gt", required=True, help="ground-truth COCO (or panoptic) json")
    parser.add_argument("--pred", required=True, help="COCO results json (or panoptic json)")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=["coco"],
        type=choice(_EVAL_METRICS),
        metavar="M",
        help=f"one or more of {', '.join(_EVAL_METRICS)} (default: coco)",
    )
    parser.add_argument(
        "--iou-type",
        nargs="+",
        default=["segm", "bbox", "boundary"],
        metavar="T",
        type=choice(("segm", "bbox", "boundary")),
        help="COCO IoU types (default: all three)",
    )
    parser.add_argument("--out", help="write the metrics to this json file")
    parser.add_argument("--plots", metavar="DIR", help="write PR curves and per-class AP PNGs here")
    parser.add_argument(
        "--max-dets", type=int, help="COCO: per image and class (100); LVIS: per image (300)"
    )
    parser.add_argument(
        "--protocol",
        default="auto",
        type=choice(("auto", "coco", "lvis")),
        help="auto: LVIS when the gt has neg_category_ids, not_exhaustive_category_ids, frequency",
    )
    parser.add_argument(
        "--score-thr", type=float, default=0.5, help="cells: keep detections scoring >= this"
    )
    parser.add_argument(
        "--tolerance", type=int, default=2, help="cells: boundary F tolerance in px"
    )
    parser.add_argument(
        "--by-image", action="store_true", help="cells: average per image, not pooled"
    )
    parser.add_argument("--gt-pngs", metavar="DIR", help="panoptic: gt PNG folder")
    parser.add_argument("--pred-pngs", metavar="DIR", help="panoptic: predicted PNG folder")
    parser.set_defaults(handler=_run_eval)


_EVAL_METRICS = ("coco", "cells", "panoptic")


def _run_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from instaseg.data.errors import DataError

    metrics = list(dict.fromkeys(args.metrics))
    if "panoptic" in metrics and len(metrics) > 1:
        raise SystemExit("instaseg eval: --metrics panoptic reads panoptic json; run it on its own")
    try:
        report = _eval_panoptic(args) if metrics == ["panoptic"] else _eval_instances(args, metrics)
    except DataError as error:
        logging.getLogger("instaseg").error("instaseg eval: %s", error)
        return 1
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def _eval_instances(args: argparse.Namespace, metrics: list[str]) -> dict:
    """COCO and / or cell metrics of a COCO results json; prints the tables."""
    from instaseg.eval import cell_metrics_from_coco, evaluate, plot_per_class_ap, plot_pr_curves
    from instaseg.eval.report import format_cells, format_coco, format_per_class

    report = {}
    if "coco" in metrics:
        lvis = {"auto": None, "coco": False, "lvis": True}[args.protocol]
        result = evaluate(
            args.gt, args.pred, iou_types=args.iou_type, max_dets=args.max_dets, lvis=lvis
        )
        print(format_coco(result), end="\n\n")
        print(format_per_class(result), end="\n\n")
        report.update(result.to_dict())
        if args.plots:
            paths = [*plot_pr_curves(result, args.plots), plot_per_class_ap(result, args.plots)]
            print(f"wrote {len(paths)} plots to {args.plots}")
    if "cells" in metrics:
        cells = cell_metrics_from_coco(
            args.gt,
            args.pred,
            score_threshold=args.score_thr,
            boundary_tolerance=args.tolerance,
            by_image=args.by_image,
        )
        print(format_cells(cells), end="\n\n")
        report["cells"] = cells.to_dict()
    return report


def _eval_panoptic(args: argparse.Namespace) -> dict:
    from instaseg.eval import panoptic_quality
    from instaseg.eval.report import format_panoptic

    result = panoptic_quality(
        args.gt, args.pred, gt_folder=args.gt_pngs, pred_folder=args.pred_pngs
    )
    print(format_panoptic(result), end="\n\n")
    return {"panoptic": result.to_dict()}
