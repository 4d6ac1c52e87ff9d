"""The training loss: cross-entropy with label smoothing, class weights, an L1 penalty, and mixup/cutmix.

Mixing and its soft-target loss are timm's (`timm.data.Mixup`, `timm.loss.SoftTargetCrossEntropy`).
"""

from __future__ import annotations

from typing import Any

import timm.data
import torch
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from zoo.errors import ZooError

_soft_target_ce = SoftTargetCrossEntropy()


def balanced_weights(datamodule: Any, num_classes: int) -> torch.Tensor:
    """n / (classes * n_class) per class of the training split (sklearn's "balanced"); absent classes get 0."""
    split = getattr(datamodule, "splits", {}).get("train")
    if split is None:  # streamed shards: the labels are not known before the epoch runs
        raise ZooError(
            f"--model.class_weights balanced needs the training labels up front, which {type(datamodule).__name__} "
            "does not have; train from an image folder (--data.root) to weigh the classes"
        )
    labels = torch.as_tensor(split.labels)
    counts = torch.bincount(labels, minlength=num_classes).float()
    return torch.where(counts > 0, len(labels) / (num_classes * counts.clamp(min=1)), torch.zeros(()))


def make_mixer(
    mixup: float, cutmix: float, label_smoothing: float, num_classes: int
) -> timm.data.Mixup | None:
    """timm's batch mixer for these alphas (None when both are 0); with both on, each batch gets one of them.

    The mixer returns soft targets with the label smoothing already in them.
    """
    if mixup <= 0 and cutmix <= 0:
        return None
    return timm.data.Mixup(
        mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes
    )


def mix(
    mixer: timm.data.Mixup | None, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixed images and soft targets (B, classes), or the batch as it is (hard labels (B,)).

    timm pairs each image with the batch reversed, so it needs an even batch; an odd one (a last
    partial batch) trains unmixed, with the same label smoothing.
    """
    if mixer is None or len(images) % 2:
        return images, labels
    return mixer(images, labels)


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None, label_smoothing: float
) -> torch.Tensor:
    """Cross-entropy on hard labels (B,) or on mixed soft targets (B, classes)."""
    if targets.ndim == 2:
        return _soft_target_ce(logits, targets)
    return nn.functional.cross_entropy(logits, targets, weight=weight, label_smoothing=label_smoothing)


def l1_penalty(net: nn.Module, l1: float) -> torch.Tensor:
    """l1 * sum(|w|) over the weights, not biases or norms: the course's definition.

    torch's optimisers offer L2 (weight_decay) only, so the penalty is added to the loss.
    """
    return l1 * sum(p.abs().sum() for p in net.parameters() if p.ndim > 1)
