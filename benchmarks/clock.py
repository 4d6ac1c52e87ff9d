"""A Lightning callback that writes (wall-clock time, val/acc) after every validation epoch.

Used by benchmarks that run `zoo fit` in a subprocess and need time-to-accuracy:
`--trainer.callbacks+=benchmarks.clock.EpochClock` with `ZOO_BENCH_CLOCK=/path/to/clock.jsonl`.
"""

from __future__ import annotations

import json
import os
import time

import lightning as L


class EpochClock(L.Callback):
    """Appends `{"time": unix seconds, "epoch": n, "val_acc": a}` lines to $ZOO_BENCH_CLOCK."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        acc = float(trainer.callback_metrics["val/acc"])
        with open(os.environ["ZOO_BENCH_CLOCK"], "a") as f:
            f.write(json.dumps({"time": time.time(), "epoch": trainer.current_epoch, "val_acc": acc}) + "\n")
