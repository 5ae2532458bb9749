"""A PNG of a run's training curves, drawn from its metrics.jsonl records."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


def plot_training_curves(records: list[dict], path: str | Path) -> Path:
    """Three panels: total and per-term losses against step, the learning rate against step,
    and validation mask (and box) AP against epoch. `records` are metrics.jsonl records (see
    `instaseg.engine.metrics_log`); panels without data say so."""
    path = Path(path)
    train = [record for record in records if record.get("kind") == "train"]
    validated = [record for record in records if record.get("kind") == "epoch" and "val" in record]
    figure = Figure(figsize=(15, 4.2), layout="constrained")
    loss_axes, lr_axes, ap_axes = figure.subplots(1, 3)
    _plot_losses(loss_axes, train)
    _plot_series(lr_axes, train, "lr", "learning rate")
    lr_axes.set_xlabel("step")
    lr_axes.set_title("learning rate")
    _plot_ap(ap_axes, validated)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _plot_losses(axes, train: list[dict]) -> None:
    terms = sorted({key for record in train for key in record if key.startswith("loss_")})
    _plot_series(axes, train, "total_loss", "total", linewidth=2)
    for term in terms:
        _plot_series(axes, train, term, term, linewidth=1)
    axes.set_xlabel("step")
    axes.set_title("training loss")
    if train:
        axes.legend(fontsize="small")


def _plot_series(axes, records: list[dict], key: str, label: str, **style) -> None:
    points = [(record["step"], record[key]) for record in records if record.get(key) is not None]
    if not points:
        axes.text(0.5, 0.5, f"no {label} logged", ha="center", va="center")
        return
    steps, values = zip(*points, strict=True)
    axes.plot(steps, values, label=label, **style)


def _plot_ap(axes, validated: list[dict]) -> None:
    axes.set_title("validation AP")
    axes.set_xlabel("epoch")
    drawn = False
    for iou_type, label in (("segm", "mask AP"), ("bbox", "box AP")):
        points = [
            (record["epoch"], record["val"][iou_type]["AP"])
            for record in validated
            if record["val"].get(iou_type, {}).get("AP") is not None
        ]
        if points:
            epochs, values = zip(*points, strict=True)
            axes.plot(epochs, values, marker="o", label=label)
            drawn = True
    if drawn:
        axes.set_ylim(bottom=0)
        axes.legend(fontsize="small")
    else:
        axes.text(0.5, 0.5, "no validation yet", ha="center", va="center")
