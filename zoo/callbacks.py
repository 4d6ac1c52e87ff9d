"""The callbacks every run starts with, declared as configuration, and the `<run_dir>` placeholder.

They are the parser's default for `--trainer.callbacks`, so `zoo fit --print_config` and each run's
config.yaml list them, `--trainer.callbacks+=X` (YAML: `callbacks+:`) adds to them and a `callbacks:` list
in YAML replaces them, as in any LightningCLI program.
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

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
        # Unmonitored, so it saves every epoch. Not `save_last=True` on the one above: Lightning 2.6 rewrites
        # last.ckpt only in epochs that improve val/acc, so a resume would repeat every epoch since the best.
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {
            "dirpath": f"{RUN_DIR}/checkpoints",
            "filename": "last",
            "monitor": None,
            "save_top_k": 1,
            "enable_version_counter": False,
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
