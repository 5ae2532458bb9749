"""Metrics for class-agnostic instances (cells, nuclei): AP@tau, F1, AJI, SBD, boundary F.

Definitions (per image; then pooled over the dataset, see `by_image`):

- AP@tau = TP / (TP + FP + FN) with one-to-one matching of pairs with IoU > tau (the DSB 2018
  and StarDist "accuracy"); among maximum matchings the one with the largest IoU sum is used.
  F1 = 2TP / (2TP + FP + FN); mean matched IoU = mean IoU of the matched pairs.
- AJI (Kumar et al. 2017): each ground truth object takes the prediction of highest IoU with it
  (C += intersection, U += union; U += its area when nothing overlaps); predictions never
  taken add their area to U. AJI = C / U.
- SBD: best Dice of each object against the other set, averaged over the ground truth (BD) and
  over the predictions; SBD = the smaller of the two.
- Boundary F (DAVIS-style): the 1-pixel inner boundaries of all objects of a set; precision
  is the fraction of predicted boundary pixels within `boundary_tolerance` px (Euclidean) of a
  ground-truth boundary pixel, recall the converse, F their harmonic mean.

Pooling (`by_image=False`, the StarDist `matching_dataset` way) sums the counts (TP, FP, FN;
C and U; best-Dice sums; boundary hits) over all images and takes the ratios once.
`by_image=True` averages the per-image values instead (the DSB 2018 Kaggle score for AP),
skipping images where a value is undefined (no objects on either side). A value that is
undefined for the whole dataset is NaN.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage, sparse
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from instaseg.eval.boundary import pixel_boundary, rle_pixels
from instaseg.eval.inputs import load_ground_truth, load_predictions
from instaseg.structures import Instances

DEFAULT_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
CellInput = np.ndarray | Tensor | Instances


@dataclass
class InstanceSet:
    """The objects of one image as a sparse bool matrix [N, H*W] over row-major pixels."""

    matrix: sparse.csr_matrix
    image_size: tuple[int, int]  # (height, width)

    @property
    def areas(self) -> np.ndarray:
        return np.asarray(self.matrix.sum(axis=1)).ravel().astype(np.int64)  # [N]

    def __len__(self) -> int:
        return self.matrix.shape[0]

    @staticmethod
    def from_pixel_lists(pixels: list[np.ndarray], image_size: tuple[int, int]) -> InstanceSet:
        """One int array of flat (row-major) pixel indices per object."""
        rows = np.repeat(np.arange(len(pixels)), [len(p) for p in pixels])
        cols = np.concatenate(pixels) if pixels else np.zeros(0, dtype=np.int64)
        data = np.ones(len(cols), dtype=np.int32)
        shape = (len(pixels), image_size[0] * image_size[1])
        return InstanceSet(sparse.csr_matrix((data, (rows, cols)), shape=shape), image_size)


@dataclass
class CellMetrics:
    """Dataset metrics; `ap`, `tp`, `fp`, `fn` are indexed like `thresholds`. F1, precision,
    recall and mean matched IoU are at thresholds[0] (0.5 by default)."""

    thresholds: list[float]
    ap: list[float]
    tp: list[int]
    fp: list[int]
    fn: list[int]
    f1: float
    precision: float
    recall: float
    mean_matched_iou: float
    aji: float
    sbd: float
    boundary_f: float
    boundary_precision: float
    boundary_recall: float
    num_images: int
    by_image: bool = False

    @property
    def mean_ap(self) -> float:
        """AP averaged over the thresholds (the DSB 2018 score)."""
        return float(np.mean(self.ap))

    def to_dict(self) -> dict[str, float | None]:
        """Fractions in 0..1 (None when undefined): AP (mean over tau), AP50 ... AP95, F1, ..."""
        out = {"AP": self.mean_ap}
        out.update(
            {f"AP{round(t * 100)}": a for t, a in zip(self.thresholds, self.ap, strict=True)}
        )
        out.update(
            F1=self.f1,
            precision=self.precision,
            recall=self.recall,
            mean_matched_iou=self.mean_matched_iou,
            AJI=self.aji,
            SBD=self.sbd,
            boundary_F=self.boundary_f,
            boundary_precision=self.boundary_precision,
            boundary_recall=self.boundary_recall,
        )
        return {k: None if v is None or np.isnan(v) else float(v) for k, v in out.items()}


def to_instance_set(item: CellInput, *, is_gt: bool = False) -> InstanceSet:
    """Label image (int [H, W], 0 = background), bool masks [N, H, W] or Instances (masks;
    ground-truth crowd regions are left out) -> InstanceSet."""
    if isinstance(item, Instances):
        if item.masks is None:
            raise ValueError("Instances without masks cannot be scored as cells")
        keep = (
            ~item.iscrowd
            if is_gt and item.iscrowd is not None
            else torch.ones(len(item), dtype=torch.bool)
        )
        item = item.masks[keep]
    array = item.detach().cpu().numpy() if isinstance(item, Tensor) else np.asarray(item)
    if array.ndim == 2:
        if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"a label image must be an integer array [H, W], got {array.dtype}")
        flat = array.ravel()
        pixels = np.flatnonzero(flat)
        labels, inverse = np.unique(flat[pixels], return_inverse=True)
        if labels.size == 0:
            return InstanceSet.from_pixel_lists([], array.shape)
        order = np.argsort(inverse, kind="stable")
        splits = np.cumsum(np.bincount(inverse, minlength=len(labels)))[:-1]
        return InstanceSet.from_pixel_lists(np.split(pixels[order], splits), array.shape)
    if array.ndim == 3 and array.dtype == bool:
        return InstanceSet.from_pixel_lists([np.flatnonzero(m) for m in array], array.shape[1:])
    raise TypeError(
        f"expected a label image [H, W] or bool masks [N, H, W], got {array.dtype} {array.shape}"
    )


def cell_metrics(
    gt: Sequence[CellInput | InstanceSet],
    predictions: Sequence[CellInput | InstanceSet],
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    boundary_tolerance: int = 2,
    by_image: bool = False,
) -> CellMetrics:
    """Cell metrics of `predictions[i]` against `gt[i]` for each image i (see module doc)."""
    if len(gt) != len(predictions):
        raise ValueError(f"gt has {len(gt)} images but predictions has {len(predictions)}")
    if not thresholds or not all(0 <= t < 1 for t in thresholds):
        raise ValueError(f"thresholds must be IoU values in [0, 1), got {list(thresholds)}")
    counts = []
    for i, (g, p) in enumerate(zip(gt, predictions, strict=True)):
        g = g if isinstance(g, InstanceSet) else to_instance_set(g, is_gt=True)
        p = p if isinstance(p, InstanceSet) else to_instance_set(p)
        if g.image_size != p.image_size:
            raise ValueError(
                f"image {i}: gt is {g.image_size} but the prediction is {p.image_size}"
            )
        counts.append(image_counts(g, p, thresholds, boundary_tolerance))
    return _summarise(
        np.stack(counts) if counts else np.zeros((0, _num_counts(thresholds))), thresholds, by_image
    )


def image_counts(
    gt: InstanceSet, pred: InstanceSet, thresholds: Sequence[float], tolerance: int
) -> np.ndarray:
    """One image's additive counts, float [4 * len(thresholds) + 10]: per tau (tp, fp, fn,
    matched IoU sum), then AJI (C, U), SBD (gt best-Dice sum, n gt, pred best-Dice sum, n pred),
    boundary (pred hits, pred pixels, gt hits, gt pixels)."""
    inter = (gt.matrix @ pred.matrix.T).toarray().astype(np.float64)  # [G, P]
    area_g, area_p = gt.areas.astype(np.float64), pred.areas.astype(np.float64)
    union = area_g[:, None] + area_p[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    per_tau = []
    for tau in thresholds:
        matched, iou_sum = match(iou, tau)
        per_tau += [matched, len(pred) - matched, len(gt) - matched, iou_sum]
    dice = np.divide(
        2 * inter, area_g[:, None] + area_p[None, :], out=np.zeros_like(inter), where=inter > 0
    )
    best_g = dice.max(axis=1).sum() if dice.size else 0.0
    best_p = dice.max(axis=0).sum() if dice.size else 0.0
    sbd = [best_g, len(gt), best_p, len(pred)]
    return np.array(
        per_tau
        + list(_aji_counts(iou, inter, union, area_g, area_p))
        + sbd
        + list(_boundary_counts(gt, pred, tolerance)),
        dtype=np.float64,
    )


def match(iou: np.ndarray, tau: float) -> tuple[int, float]:
    """Maximum one-to-one matching over pairs with IoU > tau in iou [G, P]; ties in size are
    broken by the largest IoU sum. Returns (number of pairs, their IoU sum)."""
    candidate = iou > tau
    rows, cols = np.flatnonzero(candidate.any(axis=1)), np.flatnonzero(candidate.any(axis=0))
    if rows.size == 0:
        return 0, 0.0
    sub, ok = iou[np.ix_(rows, cols)], candidate[np.ix_(rows, cols)]
    if (ok.sum(axis=0) <= 1).all() and (ok.sum(axis=1) <= 1).all():
        return int(ok.sum()), float(
            sub[ok].sum()
        )  # unique (always so for tau >= 0.5 on label images)
    # every candidate pair is worth 1 plus its IoU / (2n) <= 1/2 in total, so size comes first
    gain = ok * (1.0 + sub / (2 * min(sub.shape)))
    r, c = linear_sum_assignment(-gain)
    kept = ok[r, c]
    return int(kept.sum()), float(sub[r, c][kept].sum())


def _aji_counts(iou, inter, union, area_g, area_p) -> tuple[float, float]:
    """(C, U) of AJI for one image."""
    if iou.shape[1] == 0:
        return 0.0, float(area_g.sum())
    best = iou.argmax(axis=1)  # [G]
    rows = np.arange(len(best))
    hit = iou[rows, best] > 0
    c = inter[rows[hit], best[hit]].sum()
    u = union[rows[hit], best[hit]].sum() + area_g[~hit].sum()
    unused = np.ones(iou.shape[1], dtype=bool)
    unused[best[hit]] = False
    return float(c), float(u + area_p[unused].sum())


def _boundary_counts(
    gt: InstanceSet, pred: InstanceSet, tolerance: int
) -> tuple[int, int, int, int]:
    """(pred boundary px near gt boundary, pred boundary px, gt boundary px near pred, gt px)."""
    gt_b, pred_b = boundary_map(gt), boundary_map(pred)
    r = int(tolerance)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = yy**2 + xx**2 <= r**2
    near_gt = ndimage.binary_dilation(gt_b, structure=disk) if r > 0 else gt_b
    near_pred = ndimage.binary_dilation(pred_b, structure=disk) if r > 0 else pred_b
    return (
        int(np.count_nonzero(pred_b & near_gt)),
        int(np.count_nonzero(pred_b)),
        int(np.count_nonzero(gt_b & near_pred)),
        int(np.count_nonzero(gt_b)),
    )


def boundary_map(objects: InstanceSet) -> np.ndarray:
    """Bool [H, W]: union of the objects' 1-pixel inner boundaries (8-neighbourhood; outside
    the image counts as outside)."""
    height, width = objects.image_size
    out = np.zeros((height, width), dtype=bool)
    indptr, indices = objects.matrix.indptr, objects.matrix.indices
    for k in range(len(objects)):
        rows, cols = np.divmod(indices[indptr[k] : indptr[k + 1]].astype(np.int64), width)
        out[pixel_boundary(rows, cols, 1)] = True
    return out


def _num_counts(thresholds: Sequence[float]) -> int:
    return 4 * len(thresholds) + 10


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def _summarise(counts: np.ndarray, thresholds: Sequence[float], by_image: bool) -> CellMetrics:
    """counts [I, 4T + 10] -> CellMetrics, pooled or averaged over images."""
    t = len(thresholds)
    total = counts.sum(axis=0) if len(counts) else np.zeros(_num_counts(thresholds))
    rows = counts if by_image else total[None]
    per_tau = rows[:, : 4 * t].reshape(len(rows), t, 4)
    tp, fp, fn, iou_sum = (per_tau[..., j] for j in range(4))
    aji_c, aji_u, best_g, n_g, best_p, n_p, hit_p, px_p, hit_g, px_g = rows[:, 4 * t :].T
    with np.errstate(divide="ignore", invalid="ignore"):
        ap = tp / (tp + fp + fn)
        f1 = 2 * tp[:, 0] / (2 * tp[:, 0] + fp[:, 0] + fn[:, 0])
        precision, recall = tp[:, 0] / (tp[:, 0] + fp[:, 0]), tp[:, 0] / (tp[:, 0] + fn[:, 0])
        matched_iou = iou_sum[:, 0] / tp[:, 0]
        aji = aji_c / aji_u
        sbd = np.fmin(np.where(n_g > 0, best_g / n_g, 0.0), np.where(n_p > 0, best_p / n_p, 0.0))
        sbd[(n_g == 0) & (n_p == 0)] = np.nan
        b_precision = np.where(px_p > 0, hit_p / px_p, np.where(px_g > 0, 0.0, np.nan))
        b_recall = np.where(px_g > 0, hit_g / px_g, np.where(px_p > 0, 0.0, np.nan))
        b_f = np.where(
            b_precision + b_recall > 0, 2 * b_precision * b_recall / (b_precision + b_recall), 0.0
        )
        b_f[np.isnan(b_precision)] = np.nan

    def mean(values: np.ndarray) -> float:
        values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else float("nan")

    return CellMetrics(
        thresholds=[float(x) for x in thresholds],
        ap=[mean(ap[:, j]) for j in range(t)],
        tp=[int(v) for v in total[0 : 4 * t : 4]],
        fp=[int(v) for v in total[1 : 4 * t : 4]],
        fn=[int(v) for v in total[2 : 4 * t : 4]],
        f1=mean(f1),
        precision=mean(precision),
        recall=mean(recall),
        mean_matched_iou=mean(matched_iou),
        aji=mean(aji),
        sbd=mean(sbd),
        boundary_f=mean(b_f),
        boundary_precision=mean(b_precision),
        boundary_recall=mean(b_recall),
        num_images=len(counts),
        by_image=by_image,
    )


def cell_metrics_from_coco(
    gt: str | Path | dict,
    predictions: str | Path | list[dict],
    *,
    score_threshold: float = 0.5,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    boundary_tolerance: int = 2,
    by_image: bool = False,
) -> CellMetrics:
    """Cell metrics from a COCO ground truth and results (validated like `evaluate`): in each
    gt image, the non-crowd objects against the detections with score >= score_threshold.
    Categories are ignored."""
    truth = load_ground_truth(gt, need_masks=True)
    results = load_predictions(predictions, truth, need_masks=True)
    gt_pixels: dict[int, list[np.ndarray]] = defaultdict(list)
    pred_pixels: dict[int, list[np.ndarray]] = defaultdict(list)
    for ann in truth.dataset["annotations"]:  # segmentations are compressed RLEs by now
        if not ann["iscrowd"]:
            gt_pixels[ann["image_id"]].append(_row_major_pixels(ann["segmentation"]))
    for result in results:
        if result["score"] >= score_threshold:
            pred_pixels[result["image_id"]].append(_row_major_pixels(result["segmentation"]))
    sizes = truth.image_sizes
    return cell_metrics(
        [InstanceSet.from_pixel_lists(gt_pixels[i], size) for i, size in sizes.items()],
        [InstanceSet.from_pixel_lists(pred_pixels[i], size) for i, size in sizes.items()],
        thresholds=thresholds,
        boundary_tolerance=boundary_tolerance,
        by_image=by_image,
    )


def _row_major_pixels(rle: dict) -> np.ndarray:
    """Flat row-major pixel indices of a compressed RLE (decoded without the full image)."""
    rows, cols = rle_pixels(rle)
    return rows * rle["size"][1] + cols
