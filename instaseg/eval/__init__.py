"""Metrics over `list[Instances]` or COCO json; knows nothing about models.

- `evaluate`: COCO segm / bbox / boundary AP (LVIS-style when the gt says so), per-class AP.
- `cell_metrics`, `cell_metrics_from_coco`: AP@tau, F1, AJI, SBD and boundary F for
  class-agnostic instances (cells, nuclei).
- `panoptic_quality`: PQ, SQ and RQ on COCO panoptic json + PNGs.
- `plot_pr_curves`, `plot_per_class_ap`: PNG plots of an `EvalResult`.
"""

from instaseg.eval.boundary import boundary_iou, mask_boundary
from instaseg.eval.cells import CellMetrics, cell_metrics, cell_metrics_from_coco
from instaseg.eval.coco import IOU_TYPES, EvalResult, evaluate
from instaseg.eval.panoptic import PanopticResult, panoptic_quality
from instaseg.eval.plots import plot_per_class_ap, plot_pr_curves

__all__ = [
    "IOU_TYPES",
    "CellMetrics",
    "EvalResult",
    "PanopticResult",
    "boundary_iou",
    "cell_metrics",
    "cell_metrics_from_coco",
    "evaluate",
    "mask_boundary",
    "panoptic_quality",
    "plot_per_class_ap",
    "plot_pr_curves",
]
