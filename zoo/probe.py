"""Linear probe: fit a net's classifier on the frozen backbone's features, computed once.

A probe is the strong, cheap baseline on small data, and the best start for fine-tuning: a head
trained on the frozen features does not send large random gradients into the pretrained layers
when they are unfrozen (Kumar et al. 2022, "Fine-tuning can distort pretrained features").
Each feature vector is computed once, so hundreds of epochs over them take seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn


@torch.no_grad()
def extract_features(
    features: Callable[[torch.Tensor], torch.Tensor], batches: Iterable, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `features` (uint8 (B, C, H, W) images -> (B, F)) over every batch; returns (N, F), (N,)."""
    feats, labels = [], []
    for images, targets in batches:
        feats.append(features(images.to(device)).float().cpu())
        labels.append(targets)
    return torch.cat(feats), torch.cat(labels)


def fit_head(
    head: nn.Linear,
    feats: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    lr: float,
    weight_decay: float,
    label_smoothing: float,
    seed: int,
    batch_size: int = 64,
) -> None:
    """Train `head` in place on cached features: AdamW, cosine decay, seeded shuffles."""
    device = head.weight.device
    feats, labels = feats.to(device), labels.to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(labels) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    generator = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator).to(device)
        for start in range(0, len(labels), batch_size):
            idx = order[start : start + batch_size]
            loss = criterion(head(feats[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


@torch.no_grad()
def accuracy(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> float:
    device = next(head.parameters()).device
    return float((head(feats.to(device)).argmax(-1).cpu() == labels).float().mean())
