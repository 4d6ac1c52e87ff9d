"""The LR range test: Lightning's Tuner runs the sweep, zoo reads the curve.

Lightning's own curve and `suggestion()` are not used: its moving average is bias-corrected
with the wrong step (the early curve climbs at learning rates too small to change anything,
Lightning issue #14167) and lags far behind the sweep, and its suggestion takes the slope
against the linear learning rate, which on an exponential sweep favours that artefact. zoo
records the raw loss of every step, smooths it without lag and takes the steepest descent
against log(lr), as fastai does.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import warnings
from pathlib import Path
from unittest import mock

import lightning as L
import numpy as np
from lightning.pytorch.tuner import Tuner, lr_finder

from zoo.console import console

PLACEHOLDER_LR = 1e-3


def smooth(losses: list[float]) -> np.ndarray:
    """Centred moving average over ~10% of the sweep: unlike an EMA it does not lag behind the lr."""
    values = np.asarray(losses, dtype=float)
    window = max(3, len(values) // 10) | 1  # odd, so it is centred
    if len(values) < window:
        return values
    half = window // 2
    padded = np.pad(values, half, mode="edge")
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def suggest_lr(lrs: np.ndarray, smoothed: np.ndarray, skip_begin: int = 10) -> float | None:
    """Steepest descent of the smoothed loss against log10(lr), before the loss bottoms out."""
    finite = np.isfinite(smoothed)
    lrs, smoothed = lrs[finite], smoothed[finite]
    if len(smoothed) < skip_begin + 3:
        return None
    end = int(np.argmin(smoothed)) + 1
    if end - skip_begin < 3:
        return None
    slope = np.gradient(smoothed[skip_begin:end], np.log10(lrs[skip_begin:end]))
    return float(lrs[skip_begin + int(np.argmin(slope))])


def find_lr(
    trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule, out_dir: Path
) -> float | None:
    """Run the range test, write lr_find.png and lr_find.json to out_dir, set model.lr to the suggestion.

    The model's weights and the trainer's state are restored afterwards by Lightning's Tuner.

    Returns:
        The suggested learning rate, or None when the curve was too short to suggest one.
    """
    model.prepare_start(datamodule)  # sweep from the real starting weights (and a probed head)
    if model.lr == "auto":
        model.lr = PLACEHOLDER_LR  # the finder builds the optimizer once before overriding its lr
    before = model.lr
    model.loss_trace = []
    max_epochs = trainer.fit_loop.max_epochs
    trainer.fit_loop.max_epochs = 10**6  # the sweep's step count bounds it, not the run's epochs
    try:
        # Lightning's finder always draws a tqdm bar; in a log file or CI that is one line of \r-joined frames.
        quiet_bar = functools.partial(lr_finder.tqdm, disable=not sys.stderr.isatty())
        with mock.patch.object(lr_finder, "tqdm", quiet_bar):
            result = Tuner(trainer).lr_find(model, datamodule=datamodule, update_attr=False)
        losses = model.loss_trace
    finally:
        model.loss_trace = None
        trainer.fit_loop.max_epochs = max_epochs
    lrs = np.asarray(result.results["lr"][: len(losses)] if result is not None else [], dtype=float)
    smoothed = smooth(losses[: len(lrs)])
    suggestion = suggest_lr(lrs, smoothed)
    if suggestion is None:
        warnings.warn(f"the LR finder could not suggest a learning rate; keeping lr={before}", stacklevel=2)
        model.lr = before
        return None
    model.lr = suggestion
    out_dir.mkdir(parents=True, exist_ok=True)
    curve = {"lr": lrs.tolist(), "loss": list(losses[: len(lrs)]), "smoothed": smoothed.tolist()}
    (out_dir / "lr_find.json").write_text(json.dumps({"suggestion": suggestion, **curve}, indent=1) + "\n")
    fig = _plot(lrs, np.asarray(curve["loss"]), smoothed, suggestion)
    fig.savefig(out_dir / "lr_find.png", dpi=100, bbox_inches="tight")
    _log_figure(trainer, fig)
    console.print(f"[bold]LR finder[/] suggests lr = {suggestion:.3g} (plot: {out_dir / 'lr_find.png'})")
    return suggestion


def _plot(lrs: np.ndarray, raw: np.ndarray, smoothed: np.ndarray, suggestion: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(lrs, raw, color="0.75", lw=1, label="loss per step")
    ax.plot(lrs, smoothed, color="C0", lw=2, label="smoothed")
    idx = int(np.argmin(np.abs(np.log(lrs) - math.log(suggestion))))
    ax.plot([suggestion], [smoothed[idx]], "o", color="C3", ms=9, label=f"suggested lr = {suggestion:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    top = np.nanpercentile(raw, 95) if np.isfinite(raw).any() else None
    if top is not None:
        ax.set_ylim(top=max(float(smoothed[:10].max()), float(top)) * 1.05)
    ax.set_title("LR range test")
    ax.legend()
    return fig


def _log_figure(trainer: L.Trainer, fig) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            logger.experiment.log({"lr_find": wandb.Image(fig)})
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure("lr_find", fig)
