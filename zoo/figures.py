"""The evaluation's pictures: confusion matrix, reliability diagram, top losses with Grad-CAM, learning curves."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here, and none needed
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(cm: np.ndarray, class_names: list[str]):
    """Counts beside row-normalised rates (each row: where that true class's images went)."""
    plt = pyplot()
    k = len(class_names)
    side = min(12.0, 2.5 + 0.45 * k)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side))
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    for ax, values, title, fmt in (
        (axes[0], cm, "counts", "d"),
        (axes[1], rates, "share of the true class", ".2f"),
    ):
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)  # colour by rate in both, so the panels read alike
        ax.set_title(title)
        ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=8 if k > 12 else 10)
        ax.set_yticks(range(k), class_names, fontsize=8 if k > 12 else 10)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if k <= 25:  # numbers in the cells while they stay readable
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")  # fmt: skip
    fig.tight_layout()
    return fig


def reliability_figure(calibration: dict[str, Any], title: str = "reliability"):
    """Accuracy against confidence per bin (bars), the diagonal a calibrated model would follow, and ECE."""
    plt = pyplot()
    edges = np.asarray(calibration["bin_edges"])
    counts = np.asarray(calibration["count"])
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    used = counts > 0
    ax.bar(centres[used], np.asarray(calibration["accuracy"])[used], width=width * 0.95, color="C0",
           edgecolor="white", label="accuracy")  # fmt: skip
    ax.plot(
        centres[used], np.asarray(calibration["confidence"])[used], "o", color="C3", ms=4, label="confidence"
    )
    ax.plot([0, 1], [0, 1], "--", color="0.4", lw=1, label="calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top score)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}: ECE {calibration['ece']:.3f}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def top_losses_figure(cells: list[dict[str, Any]], columns: int = 4):
    """Each image beside its Grad-CAM for the predicted class, titled true / predicted and their scores.

    Args:
        cells: dicts with "image" and "overlay" ((H, W, 3) uint8) and the top_losses entry's fields.
        columns: image pairs per row.
    """
    plt = pyplot()
    rows = max(1, -(-len(cells) // columns))
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2 * columns * 1.9, rows * 2.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for n, cell in enumerate(cells):
        r, c = divmod(n, columns)
        left, right = axes[r, 2 * c], axes[r, 2 * c + 1]
        left.imshow(cell["image"], cmap="gray" if cell["image"].ndim == 2 else None)
        right.imshow(cell["overlay"])
        wrong = cell["predicted"] != cell["true"]
        left.set_title(f"true {cell['true']} {cell['p_true']:.2f}", fontsize=8)
        right.set_title(
            f"pred {cell['predicted']} {cell['p_predicted']:.2f}", fontsize=8, color="C3" if wrong else "C2"
        )
    fig.suptitle(
        "top losses: highest loss first; right: Grad-CAM of the predicted class (red: a mistake)", fontsize=10
    )
    fig.tight_layout()
    return fig


def learning_curves_figure(metrics_csv: Path):
    """Training and validation loss, validation accuracy and the learning rate, per epoch and step."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))

    def series(key: str, x: str = "epoch") -> tuple[list[float], list[float]]:
        pts = [
            (float(r[x]), float(r[key]))
            for r in rows
            if r.get(key) not in (None, "") and r.get(x) not in (None, "")
        ]
        return [p[0] + (1 if x == "epoch" else 0) for p in pts], [p[1] for p in pts]

    lr_keys = [k for k in (rows[0].keys() if rows else []) if k.startswith("lr-")]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    panels = (("loss", "train/loss_epoch", "val/loss"), ("accuracy", "train/acc", "val/acc"))
    for ax, (title, *keys) in zip(axes, panels, strict=False):
        for key, label in zip(keys, ("train", "val"), strict=True):
            x, y = series(key)
            if x:
                ax.plot(x, y, "o-", ms=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
    lrs = [(key, *series(key, "step")) for key in lr_keys]
    lrs = [(key, x, y) for key, x, y in lrs if x]
    top = max(lrs, key=lambda item: max(item[2]), default=None)
    for key, x, y in lrs:  # many groups with layer-wise lrs: one labelled line, the others grey
        if key is top[0]:
            axes[2].plot(x, y, lw=1.5, color="C0", label=f"{key.removeprefix('lr-')} (highest)")
        else:
            axes[2].plot(x, y, lw=0.8, color="0.7")
    axes[2].set_title("learning rate" + (f" ({len(lrs)} parameter groups)" if len(lrs) > 1 else ""))
    axes[2].set_xlabel("step")
    if top is not None:
        axes[2].legend(fontsize=8)
    for ax in axes[:2]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def save(fig, path: Path) -> Path:
    """Write a figure as PNG and free it."""
    plt = pyplot()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
