"""Callbacks the tests plug in through `--trainer.callbacks+=tests.helpers.X`, as a user could."""

from __future__ import annotations

import json

import lightning as L
import torch
from torch.nn.modules.batchnorm import _BatchNorm


def _backbone_checksum(model) -> float:
    """Sum over backbone weights and BatchNorm running stats: changes iff the backbone changed."""
    total = sum(float(p.detach().double().sum()) for p in model.backbone_params)
    for module in model.net.modules():
        if isinstance(module, _BatchNorm):
            total += float(module.running_mean.double().sum()) + float(module.running_var.double().sum())
    return total


class FreezeProbe(L.Callback):
    """Records, per epoch, whether the backbone trained, was frozen and kept BatchNorm in eval mode."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.records: list[dict] = []
        self.start: float = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            bns = [m for m in pl_module.net.modules() if isinstance(m, _BatchNorm)]
            self.start = _backbone_checksum(pl_module)
            self.records.append(
                {
                    "epoch": trainer.current_epoch,
                    "requires_grad": any(p.requires_grad for p in pl_module.backbone_params),
                    "bn_training": any(m.training for m in bns),
                }
            )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.records[-1]["backbone_changed"] = _backbone_checksum(pl_module) != self.start
        with open(self.out, "w") as f:
            json.dump(self.records, f)


class LrProbe(L.Callback):
    """Saves the optimizer's learning rates of the first step, to check what lr training used."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0 and batch_idx == 0:
            sched = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
            base = (
                sched.base_lrs if sched is not None else [g["lr"] for g in trainer.optimizers[0].param_groups]
            )
            with open(self.out, "w") as f:
                json.dump({"model_lr": float(pl_module.lr), "base_lrs": [float(x) for x in base]}, f)


class FlipProbe(L.Callback):
    """Saves whether the training loader's pipeline really flips images (a HorizontalFlip in it)."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_start(self, trainer, pl_module) -> None:
        import albumentations as A

        transform = trainer.train_dataloader.dataset.transform
        with open(self.out, "w") as f:
            json.dump({"hflip": any(isinstance(t, A.HorizontalFlip) for t in transform.transforms)}, f)


class LoaderProbe(L.Callback):
    """Saves what the training loader really does: its sampler, its pipeline's transforms, the labels it gave
    and the first batch's images."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.labels: list[int] = []
        self.first: list | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.labels += batch[1].tolist()
        if self.first is None:
            self.first = batch[0].tolist()

    def on_train_end(self, trainer, pl_module) -> None:
        loader = trainer.train_dataloader
        with open(self.out, "w") as f:
            json.dump({"sampler": type(loader.sampler).__name__,
                       "transforms": [type(t).__name__ for t in loader.dataset.transform.transforms],
                       "labels": self.labels, "first_batch": self.first}, f)  # fmt: skip


class HangAt(L.Callback):
    """At the given epoch and batch, writes `marker` and waits, so a test can signal the run mid-epoch.

    It waits until SIGTERM reaches the trainer (Lightning then stops at the next batch boundary) or for
    10 minutes, which a SIGKILL cuts short.
    """

    def __init__(self, marker: str, epoch: int, batch: int) -> None:
        self.marker, self.epoch, self.batch = marker, epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            import time
            from pathlib import Path

            Path(self.marker).write_text(str(trainer.global_step))
            end = time.monotonic() + 600
            while not trainer.received_sigterm and time.monotonic() < end:
                time.sleep(0.05)


class LastCheckpointProbe(L.Callback):
    """Records, at each training batch's start, the global step saved in <run>/checkpoints/last.ckpt (-1: none)."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.seen: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        from pathlib import Path

        import torch

        last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        self.seen.append(torch.load(last, weights_only=True)["global_step"] if last.is_file() else -1)
        with open(self.out, "w") as f:
            json.dump(self.seen, f)


class LogIntervalProbe(L.Callback):
    """Records trainer.log_every_n_steps at each training batch's start; `sleep` seconds added to each step."""

    def __init__(self, out: str, sleep: float = 0.0) -> None:
        self.out, self.sleep = out, sleep
        self.seen: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(trainer.log_every_n_steps)
        with open(self.out, "w") as f:
            json.dump(self.seen, f)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        import time

        time.sleep(self.sleep)


class StopAfter(L.Callback):
    """Stops the fit at the end of epoch `epoch` (1-based), as early stopping would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= self.epoch:
            trainer.should_stop = True


class RewindProbe(L.Callback):
    """Checks, when each lottery-ticket round starts, that the net was rewound to its first epoch's weights and
    the optimiser's state cleared, and records the lr of each round's first step.

    Writes {"rounds_checked": N, "mismatches": [...], "trained_differs": bool, "optimizer_states": [...],
    "round_start_lrs": [...], "second_step_lr": float} to `out`.
    """

    def __init__(self, out: str, round_epochs: int = 1, rewind_epoch: int = 0) -> None:
        self.out, self.round_epochs, self.rewind_epoch = out, round_epochs, rewind_epoch
        self.start: dict | None = None
        self.result = {"rounds_checked": 0, "mismatches": [], "trained_differs": False, "optimizer_states": [],
                       "round_start_lrs": [], "second_step_lr": None}  # fmt: skip

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        if batch_idx == 0 and trainer.current_epoch % self.round_epochs == 0:
            self.result["round_start_lrs"].append(lr)
        if trainer.global_step == 1:
            self.result["second_step_lr"] = lr

    def on_train_epoch_start(
        self, trainer, pl_module
    ) -> None:  # runs after LotteryTicket's (added before it)
        net = pl_module.net
        if trainer.current_epoch == self.rewind_epoch:
            self.start = {k: v.detach().clone() for k, v in net.state_dict().items()}
            return
        state = net.state_dict()
        if self.start is None or trainer.current_epoch % self.round_epochs:
            return
        self.result["rounds_checked"] += 1
        self.result["optimizer_states"].append(sum(len(o.state) for o in trainer.optimizers))
        for key, value in state.items():
            if key.endswith("_mask"):
                continue
            plain = key.removesuffix("_orig")
            if not torch.equal(value.cpu(), self.start[plain].cpu()):
                self.result["mismatches"].append(plain)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.rewind_epoch:
            state = pl_module.net.state_dict()
            self.result["trained_differs"] = any(not torch.equal(state[k], v) for k, v in self.start.items())

    def on_train_end(self, trainer, pl_module) -> None:
        with open(self.out, "w") as f:
            json.dump(self.result, f)


class WandbGroupProbe(L.Callback):
    """Appends `group:run id` of the W&B run a fit logs to, to `out`, when fitting ends."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_fit_end(self, trainer, pl_module) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                with open(self.out, "a") as f:
                    f.write(f"{logger.experiment.group}:{logger.experiment.id}\n")


class StepLossProbe(L.Callback):
    """Writes each training step's loss and batch size, per epoch, to a JSON file at the end."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.epochs: list[list[tuple[float, int]]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append([])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.epochs[-1].append((float(outputs["loss"]), len(batch[1])))

    def on_train_end(self, trainer, pl_module) -> None:
        # each process of a multi-process run writes its own file: OUT.rank0, OUT.rank1, ...
        out = f"{self.out}.rank{trainer.global_rank}" if trainer.world_size > 1 else self.out
        with open(out, "w") as f:
            json.dump(self.epochs, f)
