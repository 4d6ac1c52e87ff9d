"""The callbacks every run starts with, declared as configuration, and the `<run_dir>` placeholder.

They are the parser's default for `--trainer.callbacks`, so `zoo fit --print_config` and each run's
config.yaml list them, `--trainer.callbacks+=X` (YAML: `callbacks+:`) adds to them and a `callbacks:` list
in YAML replaces them, as in any LightningCLI program.
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.callbacks.progress import ProgressBar

RUN_DIR = "<run_dir>"  # stands for this run's folder (runs/<experiment>/version_N) in any string argument

DEFAULT_CALLBACKS: list[dict[str, Any]] = [
    {  # first, so it is trainer.checkpoint_callback: `zoo fit` reports it and `--ckpt_path best` uses it
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {
            "dirpath": f"{RUN_DIR}/checkpoints",
            "filename": "best",
            "monitor": "val/acc",
            "mode": "max",
            "auto_insert_metric_name": False,
        },
    },
    {
        # Unmonitored, so it saves at epoch ends. Not `save_last=True` on the one above: Lightning 2.6 rewrites
        # last.ckpt only in epochs that improve val/acc, so a resume would repeat every epoch since the best.
        "class_path": "zoo.callbacks.LastCheckpoint",
        "init_args": {
            "dirpath": f"{RUN_DIR}/checkpoints",
            "filename": "last",
            "monitor": None,
            "save_top_k": 1,
            "enable_version_counter": False,
            "min_seconds_between_saves": 10.0,
        },
    },
    {
        "class_path": "lightning.pytorch.callbacks.LearningRateMonitor",
        "init_args": {"logging_interval": "step"},  # the lr of every parameter group, each step
    },
    {"class_path": "zoo.progress.EpochBar"},  # a rich bar in a terminal; silent in logs and CI
    {  # confusion matrix, per-class table, predictions with Grad-CAM; the run id for a resume
        "class_path": "zoo.dashboard.WandbDashboard",
        "init_args": {"every_n_epochs": 5, "samples": 16},
    },
]


class LastCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint that skips epoch-end saves coming sooner than `min_seconds_between_saves` after the last.

    The first epoch and the last one (max_epochs, max_steps, or a stop such as early stopping's) always save,
    and SIGTERM or Ctrl-C save where the run is (zoo.progress), so only a kill without warning (`kill -9`, the
    OOM killer) loses anything: at most the seconds set here, or the epoch it was in when epochs are longer.
    Why not Lightning's `train_time_interval`: it saves mid-epoch, where a resume cannot repeat the run
    exactly. Why at all: a 3.5 MB checkpoint takes ~29 ms to write, 1.7 % of a 1.7 s epoch on the bundled
    sample (benchmarks/loop_overhead.py); on epochs of minutes it changes nothing. 0 saves every epoch.
    """

    def __init__(self, *args: Any, min_seconds_between_saves: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if min_seconds_between_saves < 0:
            raise ValueError(f"min_seconds_between_saves must be 0 or more, got {min_seconds_between_saves}")
        self.min_seconds_between_saves = min_seconds_between_saves
        self._saved_at: float | None = None  # time.monotonic() of this run's last save; None before the first

    def _too_soon(self, trainer: L.Trainer) -> bool:
        if self.min_seconds_between_saves == 0:
            return False
        soon = (
            self._saved_at is not None
            and not _training_ends(trainer)
            and time.monotonic() - self._saved_at < self.min_seconds_between_saves
        )
        # Rank 0's clock decides for all: a save waits at a barrier that every process must reach.
        return bool(trainer.strategy.broadcast(soon))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._too_soon(trainer):
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._too_soon(trainer):
            super().on_validation_end(trainer, pl_module)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)  # the one place ModelCheckpoint writes
        self._saved_at = time.monotonic()


def _training_ends(trainer: L.Trainer) -> bool:
    """Whether the fit ends after this epoch (checked at its end, before Lightning counts it done)."""
    epochs, steps = trainer.max_epochs, trainer.max_steps
    return (
        trainer.should_stop
        or (epochs is not None and epochs != -1 and trainer.current_epoch + 1 >= epochs)
        or (steps is not None and steps != -1 and trainer.global_step >= steps)
    )


def with_run_dir(config: Any, run_dir: str) -> Any:
    """A copy of `config` with each string starting `<run_dir>` pointing into `run_dir`.

    Only the copy is instantiated: the saved config.yaml keeps the placeholder, so a rerun from it (or a
    resume) writes into its own new folder, not into the old run's.
    """
    config = copy.deepcopy(config)

    def resolve(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(RUN_DIR):
            return run_dir + value[len(RUN_DIR) :]
        if isinstance(value, list):
            return [resolve(v) for v in value]
        fields = vars(value) if isinstance(value, argparse.Namespace) else value  # jsonargparse's too
        if isinstance(fields, dict):
            args = fields.get("init_args")
            if str(fields.get("class_path")).endswith("Logger") and args and args.get("save_dir") == RUN_DIR:
                for key in ("name", "version"):  # a logger given the run folder logs straight into it
                    if key in args:
                        args[key] = ""
            for key, item in fields.items():
                fields[key] = resolve(item)
        return value

    return resolve(config)


def switched_off(
    callbacks: list[Callback], checkpointing: bool, progress_bar: bool, logging: bool
) -> list[Callback]:
    """The callbacks without those the trainer's own switches turn off.

    Lightning refuses a ModelCheckpoint with `enable_checkpointing false`, a progress bar with
    `enable_progress_bar false` and an LR monitor with no logger; each switch is read as "none of these".
    A progress bar the user adds replaces the default one (Lightning refuses two).
    """
    from zoo.progress import EpochBar

    bars = [c for c in callbacks if isinstance(c, ProgressBar)]
    return [
        c
        for c in callbacks
        if not (isinstance(c, ModelCheckpoint) and not checkpointing)
        and not (isinstance(c, ProgressBar) and not progress_bar)
        and not (isinstance(c, EpochBar) and len(bars) > 1)
        and not (isinstance(c, LearningRateMonitor) and not logging)
    ]
