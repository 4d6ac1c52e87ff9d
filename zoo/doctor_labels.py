"""Likely label errors, in the spirit of confident learning (Northcutt et al. 2021, "Confident Learning:
Estimating Uncertainty in Dataset Labels"), from a checkpoint's features and out-of-sample probabilities.

A model scores its own training images high whatever their label (it memorised them), so each image is
scored by a linear head that never saw it: 5-fold cross-validated heads on the checkpoint's penultimate
features (computed once). Only the features come from the checkpoint, so it may have been trained on
other classes, or on this very folder.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from datamodules.base import ImageDataset, Split, default_num_workers
from datamodules.images import decode_side, load_image
from datamodules.transforms import eval_transform
from zoo.checkpoint import load_checkpoint
from zoo.classifier import ImageClassifier
from zoo.doctor_scan import ImageRecord
from zoo.errors import ZooError
from zoo.figures import pyplot, save
from zoo.probe import extract_features, fit_head

FOLDS = 5
# Optimiser steps each fold's head trains for, whatever the data's size (epochs follow from it).
HEAD_STEPS = 600
HEAD_LR = 1e-2
HEAD_WEIGHT_DECAY = 1e-2
GRID = 16  # images in the picture of the worst suspects


@dataclass
class LabelIssue:
    """An image whose given label the out-of-sample heads doubt, and the class they suggest."""

    record: ImageRecord
    given: str
    suggested: str
    p_given: float
    p_suggested: float


def image_features(model: ImageClassifier, paths: list[Path], batch_size: int = 64) -> torch.Tensor:
    """(N, F) features of image files, preprocessed as the model's validation images were."""
    h = model.hparams
    dataset = ImageDataset(
        Split(paths, np.zeros(len(paths), dtype=np.int64)),
        eval_transform(h.image_size, h.interpolation),
        h.channels,
        decode_side(h.image_size),
    )
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=default_num_workers())
    feats, _ = extract_features(model.features, loader, model.mean.device)
    return feats


def cross_validated_probs(
    feats: torch.Tensor, labels: np.ndarray, num_classes: int, folds: int = FOLDS, seed: int = 0
) -> np.ndarray:
    """(N, K) softmax scores, each row from a linear head trained on the other folds (stratified)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    for c in range(num_classes):  # each class dealt round-robin over the folds, in a seeded order
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members] = np.arange(len(members)) % folds
    y = torch.from_numpy(labels)
    probs = np.zeros((len(labels), num_classes), dtype=np.float32)
    with _one_thread():
        for k in range(folds):
            train, test = torch.from_numpy(fold != k), torch.from_numpy(fold == k)
            if not test.any():
                continue
            # Standardised on the training folds: features of any net then suit one learning rate.
            mean, std = feats[train].mean(0), feats[train].std(0).clamp_min(1e-6)
            head = nn.Linear(feats.shape[1], num_classes)
            nn.init.zeros_(head.weight)  # logistic regression's start, as zoo's linear probe
            nn.init.zeros_(head.bias)
            epochs = max(1, math.ceil(HEAD_STEPS / math.ceil(int(train.sum()) / 64)))
            with torch.enable_grad():
                fit_head(head, (feats[train] - mean) / std, y[train], epochs, HEAD_LR, HEAD_WEIGHT_DECAY, 0.0,
                         seed + k)  # fmt: skip
            with torch.no_grad():
                probs[test.numpy()] = head((feats[test] - mean) / std).softmax(-1).numpy()
    return probs


@contextlib.contextmanager
def _one_thread():
    """Steps of a (64, F) x (F, K) head are too small to share out: on a busy 2-core machine each one
    waited ~10 ms for torch's second thread (measured), where one thread alone takes well under 1 ms."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def confident_issues(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Per-class thresholds and the (index, suggested class) of likely label errors, worst first.

    A class's threshold is its images' mean score for it (their average self-confidence). An image is
    suspect when its given class scores below that class's threshold while another class scores at or
    above its own; the suggestion is the highest-scoring such class. Worst first: lowest given-label score.
    """
    num_classes = probs.shape[1]
    thresholds = np.array(
        [probs[labels == c, c].mean() if (labels == c).any() else 1.0 for c in range(num_classes)]
    )
    p_given = probs[np.arange(len(labels)), labels]
    above = probs >= thresholds[None, :]  # (N, K)
    above[np.arange(len(labels)), labels] = False
    suspect = (p_given < thresholds[labels]) & above.any(1)
    suggested = np.where(above, probs, -1.0).argmax(1)
    order = [int(i) for i in np.argsort(p_given, kind="stable") if suspect[i]]
    return thresholds, [(i, int(suggested[i])) for i in order]


def find_label_errors(
    records: list[ImageRecord], class_names: list[str], checkpoint: Path, output: Path | None
) -> dict[str, Any]:
    """Out-of-sample label-error search over readable `records` of `class_names`; pictures the worst
    suspects in `output` (None: no picture).

    Returns:
        the report's "label_errors" section, with "issues" as LabelIssue objects (worst first).
    """
    start = time.perf_counter()
    index = {name: i for i, name in enumerate(class_names)}
    usable = [r for r in records if r.error is None and r.label in index]
    labels = np.array([index[r.label] for r in usable], dtype=np.int64)
    if len(usable) < 2 * FOLDS:
        raise ZooError(
            f"--checkpoint: the label-error search needs at least {2 * FOLDS} readable images, found {len(usable)}"
        )
    model = load_checkpoint(checkpoint, "cuda" if torch.cuda.is_available() else "cpu")
    feats = image_features(model, [r.path for r in usable])
    probs = cross_validated_probs(feats, labels, len(class_names))
    thresholds, found = confident_issues(probs, labels)
    issues = [
        LabelIssue(
            usable[i], class_names[labels[i]], class_names[j], float(probs[i, labels[i]]), float(probs[i, j])
        )
        for i, j in found
    ]
    figure = None
    if issues and output is not None:
        output.mkdir(parents=True, exist_ok=True)
        figure = save(issues_figure(issues[:GRID]), output / "label_errors.png")
    return {
        "checkpoint": str(checkpoint),
        "model": f"{type(model.net).__name__} ({model.family})",
        "images": len(usable),
        "folds": FOLDS,
        "out_of_sample_accuracy": float((probs.argmax(1) == labels).mean()),
        "thresholds": {name: float(t) for name, t in zip(class_names, thresholds, strict=True)},
        "issues": issues,
        "figure": str(figure) if figure else None,
        "seconds": round(time.perf_counter() - start, 2),
    }


def issues_figure(issues: list[LabelIssue], columns: int = 4):
    """Each suspect image titled with its given label, the suggested one and the given label's score."""
    plt = pyplot()
    rows = max(1, -(-len(issues) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 2.4, rows * 3.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, issue in zip(axes.flat, issues, strict=False):
        ax.imshow(load_image(issue.record.path, 3, 128))
        name = issue.record.rel if len(issue.record.rel) <= 32 else "..." + issue.record.rel[-29:]
        ax.set_title(
            f"{name}\ngiven {issue.given} ({issue.p_given:.2f})\nsuggested {issue.suggested} "
            f"({issue.p_suggested:.2f})",
            fontsize=8,
        )
    fig.suptitle("likely label errors, worst first (out-of-sample scores)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95), h_pad=1.5)  # room for the title above the three-line captions
    return fig
