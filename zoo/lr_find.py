"""Lightning's LR finder, with its curve and plot kept in the run folder."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.tuner import Tuner
from rich.console import Console

PLACEHOLDER_LR = 1e-3


def find_lr(
    trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule, out_dir: Path
) -> float | None:
    """Run the range test, write lr_find.png and lr_find.json to out_dir, set model.lr to the suggestion.

    The model's weights and the trainer's state are restored afterwards by Lightning's Tuner.

    Returns:
        The suggested learning rate, or None when the curve was too short to suggest one.
    """
    if model.lr == "auto":
        model.lr = PLACEHOLDER_LR  # the finder builds the optimizer once before overriding its lr
    before = model.lr
    result = Tuner(trainer).lr_find(model, datamodule=datamodule, update_attr=True)
    suggestion = result.suggestion() if result is not None else None
    if suggestion is None:
        warnings.warn(f"the LR finder could not suggest a learning rate; keeping lr={before}", stacklevel=2)
        model.lr = before
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    curve = {"lr": list(map(float, result.results["lr"])), "loss": list(map(float, result.results["loss"]))}
    (out_dir / "lr_find.json").write_text(json.dumps({"suggestion": suggestion, **curve}, indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    fig = result.plot(suggest=True, show=False)
    fig.axes[0].set_title(f"LR finder: suggested lr = {suggestion:.2e}")
    fig.savefig(out_dir / "lr_find.png", dpi=100, bbox_inches="tight")
    _log_figure(trainer, fig)
    Console(stderr=True).print(
        f"[bold]LR finder[/] suggests lr = {suggestion:.3g} (plot: {out_dir / 'lr_find.png'})"
    )
    return suggestion


def _log_figure(trainer: L.Trainer, fig) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            logger.experiment.log({"lr_find": wandb.Image(fig)})
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure("lr_find", fig)
