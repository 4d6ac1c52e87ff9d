"""The batch-size finder: Lightning's Tuner.scale_batch_size, with its result printed and saved."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.tuner import Tuner

from zoo.console import console


def find_batch_size(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    out_dir: Path,
    max_val: int,
) -> int:
    """The largest batch size (doubling from --data.batch_size) that trains a few steps without running out
    of memory, capped at `max_val` and at the training set's size. Written to out_dir/batch_size.json.

    The model's weights are restored afterwards by Lightning's Tuner.
    """
    start = datamodule.batch_size
    train_size = len(datamodule.splits["train"].labels) if datamodule.splits else None
    cap = min(max_val, train_size) if train_size else max_val
    found = Tuner(trainer).scale_batch_size(
        model, datamodule=datamodule, mode="power", init_val=start, max_val=cap, steps_per_trial=2
    )
    found = min(int(found or start), cap)  # power mode may step past max_val before it stops
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "batch_size.json").write_text(
        json.dumps({"batch_size": found, "start": start, "max_val": cap}) + "\n"
    )
    console.print(
        f"batch-size finder: {found} fits (from {start}, at most {cap}); saved {out_dir / 'batch_size.json'}; "
        f"use it with --data.batch_size {found}"
    )
    return found
