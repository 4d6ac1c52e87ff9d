"""The W&B dashboard of a run: what it shows beyond the curves, bounded in size, and the run id for a resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.loggers import WandbLogger

from zoo.evaluation import confusion, per_class


def wandb_logger(trainer: L.Trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


class WandbDashboard(L.Callback):
    """Logs to W&B, when a WandbLogger is on: the run's resolved config at the start, and every
    `every_n_epochs` validations (and after the last epoch) the confusion matrix, a per-class table and a
    table of `samples` validation images with their prediction and Grad-CAM. Saves the W&B run id in each
    checkpoint, so `zoo fit --ckpt_path` continues the same W&B run. Without a WandbLogger it does nothing.

    Args:
        every_n_epochs: log the media every this many epochs (and after the last one).
        samples: validation images in the predictions table (the first ones, the same every time).
    """

    def __init__(self, every_n_epochs: int = 5, samples: int = 16) -> None:
        self.every_n_epochs = max(1, every_n_epochs)
        self.samples = samples
        self._reset()

    def _reset(self) -> None:
        self.preds: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.images: list[torch.Tensor] = []

    def _due(self, trainer: L.Trainer) -> bool:
        if trainer.sanity_checking or wandb_logger(trainer) is None or trainer.state.fn != "fit":
            return False
        epoch = trainer.current_epoch + 1
        return epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = wandb_logger(trainer)
        config = Path(trainer.default_root_dir) / "config.yaml"  # the resolved config LightningCLI saved
        if logger is not None and trainer.is_global_zero and config.is_file():
            logger.experiment.config.update(
                {"zoo": yaml.safe_load(config.read_text())}, allow_val_change=True
            )

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if outputs is None or not self._due(trainer):
            return
        images, labels = batch  # images (B, C, H, W) in [0, 1] after on_after_batch_transfer
        self.preds.append(outputs.argmax(dim=-1).cpu())  # outputs: the step's logits (B, K)
        self.labels.append(labels.cpu())
        need = self.samples - sum(len(x) for x in self.images)
        if need > 0:
            self.images.append(images[:need].detach().float().cpu())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if not self._due(trainer):
            return
        own = [torch.cat(x) if x else torch.zeros(0, dtype=torch.long) for x in (self.preds, self.labels)]
        everyone = [own]
        if trainer.world_size > 1:  # each process saw its share of the split; rank 0 logs them all
            everyone = [None] * trainer.world_size
            torch.distributed.all_gather_object(everyone, own)
        if not trainer.is_global_zero or not self.preds:
            self._reset()
            return
        import wandb

        from apps.explain import Explainer

        names = list(pl_module.hparams.class_names)
        preds, labels = (torch.cat(parts).numpy() for parts in zip(*everyone, strict=True))
        cm = confusion(labels, preds, len(names))
        columns = ["class", "precision", "recall", "f1", "support"]
        table = wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in per_class(cm, names)])
        samples = wandb.Table(columns=["image", "grad_cam", "true", "predicted", "score"])
        pictures = []  # the same as plain images: these are saved in the run folder, offline too
        was_training = pl_module.training
        explain = Explainer(pl_module)  # a float32 copy: the training model is left as it is
        for image, label in zip(torch.cat(self.images), own[1].tolist(), strict=False):  # rank 0's own images
            shown = explain(image)  # (C, H, W) in [0, 1]; the predicted class
            with torch.no_grad():
                score = float(pl_module(image[None].to(pl_module.device)).softmax(-1)[0, shown.class_index])
            picture = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)  # (H, W, C)
            samples.add_data(wandb.Image(picture.squeeze()), wandb.Image(shown.overlay), names[label],
                             names[shown.class_index], score)  # fmt: skip
            rgb = np.repeat(picture, 3, axis=-1) if picture.shape[-1] == 1 else picture
            caption = f"true {names[label]} / predicted {names[shown.class_index]} {score:.2f}"
            pictures.append(wandb.Image(np.concatenate([rgb, shown.overlay], axis=1), caption=caption))
        pl_module.train(was_training)
        limit = 50  # a W&B confusion chart of more classes is unreadable, and large
        media: dict[str, Any] = {
            "val/per_class": table,
            "val/predictions": samples,
            "val/grad_cam": pictures,
        }
        if len(names) <= limit:
            media["val/confusion_matrix"] = wandb.plot.confusion_matrix(
                y_true=labels.tolist(), preds=preds.tolist(), class_names=names
            )
        wandb_logger(trainer).experiment.log({**media, "trainer/global_step": trainer.global_step})
        self._reset()

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        logger = wandb_logger(trainer)
        if logger is not None:
            checkpoint["wandb_run_id"] = logger.version
