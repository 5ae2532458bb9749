"""PNG plots of an `EvalResult`: precision-recall curves and per-class AP (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from instaseg.eval.coco import EvalResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; keeps an already chosen backend
    import matplotlib.pyplot as plt

    return plt


def mean_precision(precision: np.ndarray, iou_index: int | slice) -> np.ndarray:
    """precision [T, R, K] -> [R]: mean over categories with ground truth (and over the IoU
    thresholds selected by `iou_index`); NaN where no category has ground truth."""
    selected = precision[iou_index]
    selected = selected if selected.ndim == 3 else selected[None]
    valid = selected > -1  # [T', R, K]
    total = np.where(valid, selected, 0.0).sum(axis=(0, 2))
    count = valid.sum(axis=(0, 2))
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def plot_pr_curves(result: EvalResult, out_dir: str | Path) -> list[Path]:
    """One `pr_<iou type>.png` per IoU type: COCO's interpolated precision against recall at
    IoU 0.50, 0.75 and averaged over 0.50:0.95, each averaged over categories."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    thresholds, recall = result.iou_thresholds, result.recall_thresholds
    curves = {
        "IoU=0.50": int(np.argmin(np.abs(thresholds - 0.5))),
        "IoU=0.75": int(np.argmin(np.abs(thresholds - 0.75))),
        f"IoU={thresholds[0]:.2f}:{thresholds[-1]:.2f}": slice(None),
    }
    paths = []
    for iou_type, precision in result.precision.items():
        fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
        for label, index in curves.items():
            mean = mean_precision(precision, index)
            area = np.nanmean(mean) if np.isfinite(mean).any() else float("nan")
            ax.plot(recall, mean, linewidth=2, label=f"{label} (AP {area:.3f})")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
        ax.set_title(f"{iou_type} precision-recall ({result.protocol}, maxDets={result.max_dets})")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
        fig.tight_layout()
        path = out_dir / f"pr_{iou_type}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_per_class_ap(result: EvalResult, out_dir: str | Path, max_classes: int = 60) -> Path:
    """`per_class_ap.png`: horizontal AP bars per class, one panel per IoU type, sorted by the
    first type's AP; at most `max_classes` classes (the best and the worst halves)."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    types = list(result.per_class)
    first = result.per_class[types[0]]
    names = sorted(first, key=lambda n: -1.0 if first[n]["AP"] is None else first[n]["AP"])
    if len(names) > max_classes:
        names = names[: max_classes // 2] + names[-(max_classes - max_classes // 2) :]
    height = max(2.5, 0.28 * len(names) + 1.2)
    fig, axes = plt.subplots(
        1, len(types), figsize=(3.6 * len(types) + 1.6, height), dpi=110, sharey=True
    )
    axes = np.atleast_1d(axes)
    y = np.arange(len(names))
    for ax, iou_type in zip(axes, types, strict=True):
        values = [result.per_class[iou_type][n]["AP"] for n in names]
        ax.barh(y, [0.0 if v is None else v for v in values], color="tab:blue")
        for yi, v in zip(y, values, strict=True):
            ax.text(
                0.01 if v is None else v + 0.01,
                yi,
                "n/a" if v is None else f"{v:.2f}",
                va="center",
                fontsize=7,
            )
        ax.set(xlim=(0, 1.1), title=f"{iou_type} AP")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, names, fontsize=8)
    fig.tight_layout()
    path = out_dir / "per_class_ap.png"
    fig.savefig(path)
    plt.close(fig)
    return path
