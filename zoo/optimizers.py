"""The optimiser factory: the course's optimisers, built by torch, over zoo's parameter groups."""

from __future__ import annotations

from typing import Any, Literal

import torch

Optimizer = Literal["adamw", "adam", "nadam", "sgd", "rmsprop", "adagrad"]


def build_optimizer(
    name: str, groups: list[dict[str, Any]], lr: float, momentum: float = 0.9, nesterov: bool = True
) -> torch.optim.Optimizer:
    """torch's optimiser `name` over `groups` (each with its own lr and weight_decay).

    adamw decouples weight decay from the gradient (Loshchilov & Hutter); the others add it to the
    gradient as L2 regularisation, in their classic form as torch implements them (so adam with decay
    is the "Adam + L2" that AdamW improves on). Either way, biases and norm weights sit in a group with
    no decay (see `ImageClassifier.param_groups`).

    Args:
        name: adamw, adam, nadam, sgd (momentum; Nesterov with `nesterov`), rmsprop (with momentum)
            or adagrad.
        momentum: SGD's and RMSprop's momentum.
        nesterov: Nesterov momentum for SGD.
    """
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "nadam":
        return torch.optim.NAdam(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=momentum)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")  # the CLI's Literal type refuses it first
