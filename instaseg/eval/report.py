"""Plain-text tables of evaluation results, for the CLI and for logs."""

from __future__ import annotations

from instaseg.eval.cells import CellMetrics
from instaseg.eval.coco import EvalResult
from instaseg.eval.panoptic import PanopticResult

_AREAS = {"s": "small", "m": "medium", "l": "large"}
_FREQUENCIES = {"r": "rare", "c": "common", "f": "frequent"}


def _describe(key: str, max_dets: int) -> tuple[str, str, str, str]:
    """Metric key -> (kind, IoU, area, maxDets plus any LVIS category group), worded as
    pycocotools prints them."""
    kind = "Average Precision  (AP)" if key.startswith("AP") else "Average Recall     (AR)"
    rest = key[2:]
    iou, area, dets = "0.50:0.95", "all", f"{max_dets:>3d}"
    if rest in ("50", "75") and key.startswith("AP"):
        iou = f"0.{rest}"
    elif rest in _AREAS:
        area = _AREAS[rest]
    elif rest in _FREQUENCIES:
        dets += f" | catIds={_FREQUENCIES[rest]}"
    elif rest.isdigit():
        dets = f"{int(rest):>3d}"
    return kind, iou, area, dets


def format_coco(result: EvalResult) -> str:
    """The standard COCO summary (12 lines; LVIS 13) for each IoU type."""
    lines = []
    for iou_type, metrics in result.metrics.items():
        lines.append(f"{iou_type} ({result.protocol})")
        for key, value in metrics.items():
            kind, iou, area, dets = _describe(key, result.max_dets)
            shown = "  n/a" if value is None else f"{value:0.3f}"
            lines.append(f" {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={dets} ] = {shown}")
    return "\n".join(lines)


def format_per_class(result: EvalResult) -> str:
    """Per-class AP (0.50:0.95) for every IoU type, sorted by the first type's AP, best first;
    classes without ground truth last."""
    types = list(result.per_class)
    first = result.per_class[types[0]]
    names = sorted(first, key=lambda n: (first[n]["AP"] is None, -(first[n]["AP"] or 0.0), n))
    width = max([5, *map(len, names)])
    header = f"{'class':<{width}}" + "".join(f"  {t + ' AP':>11}" for t in types)
    rows = [header, "-" * len(header)]
    for name in names:
        values = [result.per_class[t][name]["AP"] for t in types]
        rows.append(f"{name:<{width}}" + "".join(f"  {_fraction(v):>11}" for v in values))
    return "\n".join(rows)


def format_cells(metrics: CellMetrics) -> str:
    """AP@tau row plus F1, AJI, SBD and boundary F."""
    pooling = "mean over images" if metrics.by_image else "pooled over images"
    taus = "  ".join(f"{t:.2f}" for t in metrics.thresholds)
    aps = "  ".join(f"{_fraction(a):>4}" for a in metrics.ap)
    return "\n".join(
        [
            f"cells ({metrics.num_images} images, {pooling})",
            f" tau       {taus}",
            f" AP@tau    {aps}",
            f" AP (mean over tau) = {_fraction(metrics.mean_ap)}",
            f" at tau={metrics.thresholds[0]:.2f}: TP {metrics.tp[0]}  FP {metrics.fp[0]}  "
            f"FN {metrics.fn[0]}  precision {_fraction(metrics.precision)}  recall "
            f"{_fraction(metrics.recall)}  F1 {_fraction(metrics.f1)}  "
            f"mean matched IoU {_fraction(metrics.mean_matched_iou)}",
            f" AJI {_fraction(metrics.aji)}  SBD {_fraction(metrics.sbd)}  boundary F "
            f"{_fraction(metrics.boundary_f)} (P {_fraction(metrics.boundary_precision)}, "
            f"R {_fraction(metrics.boundary_recall)})",
        ]
    )


def format_panoptic(result: PanopticResult) -> str:
    """PQ / SQ / RQ for all, things and stuff."""
    lines = [f"{'':8}{'PQ':>8}{'SQ':>8}{'RQ':>8}{'N':>6}"]
    for group, values in result.groups.items():
        cells = "".join(f"{_fraction(values[k], 100):>8}" for k in ("PQ", "SQ", "RQ"))
        lines.append(f"{group:8}{cells}{values['n']:>6}")
    return "\n".join(lines)


def _fraction(value: float | None, scale: float = 1.0) -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    return f"{value * scale:.1f}" if scale != 1.0 else f"{value:.3f}"
