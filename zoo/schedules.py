"""Learning-rate schedules: the course's shapes as one LambdaLR stepped per batch, and reduce-on-plateau.

Every shape but plateau is a pure function of the step (epoch-based ones take the step's epoch), run by
torch's LambdaLR. Its saved state is the step count alone, so a resumed run continues the schedule
exactly, and a run resumed with a larger max_epochs stretches it (torch's OneCycleLR would raise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

Scheduler = Literal[
    "onecycle", "cosine", "constant", "step", "multistep", "exponential", "polynomial", "plateau"
]


@dataclass
class ScheduleConfig:
    """The schedule's settings, as the model's hyperparameters name them (see ImageClassifier)."""

    scheduler: str = "onecycle"
    warmup_pct: float = 0.25  # onecycle/cosine: share of all steps spent warming up
    warmup_epochs: float = 0.0  # the other shapes: linear warm-up from lr/25 over this many epochs
    step_size: int = 5  # step: multiply by gamma every step_size epochs
    milestones: list[int] = field(default_factory=lambda: [30, 60])  # multistep: at these epochs
    gamma: float = 0.5  # step, multistep, exponential (per epoch)
    power: float = 1.0  # polynomial: (1 - progress) ** power
    plateau_factor: float = 0.1  # plateau: multiply by this when val/loss stalls...
    plateau_patience: int = 10  # ...for this many epochs
    min_lr: float = 1e-6  # plateau's floor


def cosine_between(start: float, end: float, frac: float) -> float:
    """Cosine interpolation from start (frac=0) to end (frac=1)."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * frac))


def one_cycle(step: int, warmup: int, total: int) -> float:
    """fastai/torch one-cycle shape: cosine up from 1/25 to 1, then cosine down to 1/25e4."""
    start, end = 1 / 25, 1 / 25e4
    if step < warmup:
        return cosine_between(start, 1.0, step / warmup)
    return cosine_between(1.0, end, min(1.0, (step - warmup) / max(1, total - warmup)))


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return cosine_between(1.0, 0.0, min(1.0, (step - warmup) / max(1, total - warmup)))


def resume_lrs(trainer: Any) -> None:
    """On a resumed run, put each parameter group on its schedule's lr at the restored step.

    The optimiser's saved lr is the one the run was saved with, so a run resumed with a larger max_epochs (its
    LambdaLR rebuilt longer, with only the step count restored) would train one step on the old schedule's lr,
    the end of the old cycle, before the stretched schedule takes over. For a plain resume this changes nothing.
    """
    for config in trainer.lr_scheduler_configs:
        schedule = config.scheduler
        if isinstance(schedule, torch.optim.lr_scheduler.LambdaLR):
            groups = schedule.optimizer.param_groups
            for group, base, factor in zip(groups, schedule.base_lrs, schedule.lr_lambdas, strict=True):
                group["lr"] = base * factor(schedule.last_epoch)


def lr_factor(step: int, cfg: ScheduleConfig, steps_per_epoch: int, total: int) -> float:
    """The lr multiplier at `step` (0-based) for every shape LambdaLR runs."""
    if cfg.scheduler in ("onecycle", "cosine"):
        warmup = max(1, int(total * cfg.warmup_pct)) if cfg.warmup_pct > 0 else 0  # 0: none at all
        return (one_cycle if cfg.scheduler == "onecycle" else warmup_cosine)(step, warmup, total)
    epoch = step // max(1, steps_per_epoch)  # the epoch this step belongs to: decays land on epoch edges
    if cfg.scheduler == "step":
        factor = cfg.gamma ** (epoch // max(1, cfg.step_size))
    elif cfg.scheduler == "multistep":
        factor = cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    elif cfg.scheduler == "exponential":
        factor = cfg.gamma**epoch
    elif cfg.scheduler == "polynomial":
        factor = (1.0 - min(step, total) / max(1, total)) ** cfg.power
    else:  # constant
        factor = 1.0
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:  # linear from 1/25, as one-cycle starts
        factor *= 1 / 25 + (1 - 1 / 25) * step / warmup
    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, total: int, rounds: int = 1
) -> dict[str, Any]:
    """Lightning's lr_scheduler config for `cfg` (a constant lr without warm-up needs none: see the caller).

    With `rounds` > 1 the `total` steps are cut into that many equal rounds and the shape restarts with each.
    """
    if cfg.scheduler == "plateau":
        # torch's ReduceLROnPlateau, run by Lightning once per epoch on val/loss; its state (best, bad
        # epochs) is saved in checkpoints, so a resumed run keeps counting where it stopped.
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
        )
        return {"scheduler": plateau, "interval": "epoch", "monitor": "val/loss", "strict": True}
    length = max(1, total // rounds)
    shape = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step % length if rounds > 1 else step, cfg, steps_per_epoch, length)
    )
    return {"scheduler": shape, "interval": "step"}
