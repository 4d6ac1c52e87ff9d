"""The classification system every family shares: loss, metrics, optimiser, schedule, checkpoints.

The families build `self.net` on it: zoo.scratch (MLP, CNN) and zoo.finetune (any timm backbone).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Literal

import lightning as L
import torch
import torchmetrics
from torch import nn

import zoo
from zoo.console import info
from zoo.errors import ZooError
from zoo.loss import balanced_weights, cross_entropy, l1_penalty, make_mixer, mix
from zoo.optimizers import Optimizer, build_optimizer
from zoo.schedules import ScheduleConfig, Scheduler, build_scheduler, resume_lrs


def check_dropout(args: dict[str, Any]) -> None:
    """Dropout rates are probabilities: one line for a rate outside [0, 1), before torch's traceback."""
    for name in ("dropout", "head_dropout", "drop_rate"):
        if name in args and not 0 <= args[name] < 1:
            raise ZooError(f"--model.{name} must be in [0, 1), got {args[name]}")


def _plain(value: Any) -> Any:
    """Lists and tuples compare equal, floats to 6 digits (YAML round trips)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return round(value, 6) if isinstance(value, float) else value


def _metrics(num_classes: int, prefix: str) -> torchmetrics.MetricCollection:
    metrics: dict[str, torchmetrics.Metric] = {
        "acc": torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro"),
        "f1": torchmetrics.classification.MulticlassF1Score(num_classes, average="macro"),
    }
    if num_classes >= 6:
        metrics["acc_top5"] = torchmetrics.classification.MulticlassAccuracy(
            num_classes, top_k=5, average="micro"
        )
    return torchmetrics.MetricCollection(metrics, prefix=prefix)


class ImageClassifier(L.LightningModule):
    """Shared system of every zoo model; subclasses only build `self.net` (a plain nn.Module).

    The data config (class names, image size, channels, mean, std) is linked in from the data
    module by the CLI and saved as plain hyperparameters, so a checkpoint is enough to predict.
    `forward` takes images scaled to [0, 1] (B, C, H, W) and normalises them itself.

    Args:
        class_names: class names in label order (linked from the data module).
        image_size: input side in pixels (linked).
        channels: input channels (linked).
        mean: per-channel normalisation mean of [0, 1] pixels (linked).
        std: per-channel normalisation std (linked).
        interpolation: how images are resized (linked): bilinear, bicubic, area or nearest.
        lr: peak learning rate, or "auto" to run the LR finder first (zoo fit only).
        weight_decay: decoupled weight decay (not applied to biases and norm layers).
        optimizer: adamw, adam, nadam, sgd, rmsprop or adagrad (zoo.optimizers.build_optimizer).
        momentum: SGD's and RMSprop's momentum.
        nesterov: Nesterov momentum for SGD.
        scheduler: onecycle, cosine (linear warm-up, cosine decay), constant, step, multistep, exponential,
            polynomial or plateau (zoo.schedules; the lr of every group is logged each step).
        warmup_pct: onecycle/cosine: share of all steps spent warming up (one-cycle's pct_start).
        warmup_epochs: the other schedules: linear warm-up from lr/25 over this many epochs (not plateau).
        step_size: step: multiply the lr by gamma every step_size epochs.
        milestones: multistep: multiply the lr by gamma at each of these epochs.
        gamma: the factor of step, multistep and exponential (exponential: every epoch).
        power: polynomial: lr * (1 - progress) ** power.
        plateau_factor: plateau: multiply the lr by this when val/loss has not improved...
        plateau_patience: ...for this many epochs,
        min_lr: ...down to this floor.
        label_smoothing: cross-entropy label smoothing.
        l1: an L1 penalty, l1 * sum(|w|) over the weights (not biases or norms), added to the training loss
            beside weight decay (L2); logged as train/l1.
        mixup: mixup's alpha: each training batch is blended with itself reversed by a weight drawn from
            Beta(alpha, alpha), targets alike (timm.data.Mixup); 0 = off, timm's ImageNet recipes use 0.8.
        cutmix: cutmix's alpha: a box of the reversed batch is pasted in, targets weighted by area; 0 = off
            (timm: 1.0). With both on, each batch gets one of the two, at even odds.
        class_weights: "balanced" weighs each class's training loss by n / (classes * n_class) (sklearn's
            rule), for imbalanced folders; "none" weighs all alike. val/loss stays unweighted.
        temperature: logits are divided by it (temperature scaling, Guo et al. 2017); `zoo calibrate` fits it
            on the validation split and saves it in a copy of the checkpoint; 1 = as trained.
    """

    family = "base"

    def __init__(
        self,
        class_names: list[str] | None = None,
        image_size: int = 224,
        channels: int = 3,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        interpolation: str = "bilinear",
        lr: float | Literal["auto"] = 1e-3,
        weight_decay: float = 0.01,
        optimizer: Optimizer = "adamw",
        momentum: float = 0.9,
        nesterov: bool = True,
        scheduler: Scheduler = "onecycle",
        warmup_pct: float = 0.25,
        warmup_epochs: float = 0.0,
        step_size: int = 5,
        milestones: list[int] | None = None,
        gamma: float = 0.5,
        power: float = 1.0,
        plateau_factor: float = 0.1,
        plateau_patience: int = 10,
        min_lr: float = 1e-6,
        label_smoothing: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        l1: float = 0.0,
        class_weights: Literal["none", "balanced"] = "none",
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if not class_names or len(class_names) < 2:
            raise ZooError(f"a classifier needs at least 2 classes, got {class_names!r}")
        if lr != "auto" and not lr > 0:
            raise ZooError(f"--model.lr must be above 0 (or auto), got {lr}")
        if not 0 <= label_smoothing < 1:
            raise ZooError(f"--model.label_smoothing must be in [0, 1), got {label_smoothing}")
        if mixup < 0 or cutmix < 0:
            raise ZooError(
                f"--model.mixup and --model.cutmix are Beta alphas, 0 (off) or more; got {mixup}, {cutmix}"
            )
        if class_weights == "balanced" and (mixup > 0 or cutmix > 0):
            raise ZooError(
                "--model.class_weights balanced does not combine with mixup/cutmix (their targets mix two "
                "classes); use --data.sampler balanced for imbalanced classes instead"
            )
        if not temperature > 0:
            raise ZooError(f"--model.temperature must be above 0, got {temperature}")
        if l1 < 0:
            raise ZooError(f"--model.l1 must be 0 or more, got {l1}")
        if weight_decay < 0:
            raise ZooError(f"--model.weight_decay must be 0 or more, got {weight_decay}")
        if scheduler == "plateau" and warmup_epochs > 0:
            raise ZooError(
                "--model.warmup_epochs does not combine with --model.scheduler plateau (plateau sets the lr "
                "from val/loss alone); drop one of them"
            )
        self.save_hyperparameters()
        self.lr = lr  # an attribute so Lightning's LR finder can set it
        self.num_classes = len(class_names)
        mean = mean if mean is not None else [0.5] * channels
        std = std if std is not None else [0.5] * channels
        self.register_buffer("mean", torch.tensor(mean).view(1, channels, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, channels, 1, 1), persistent=False)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.mixer = make_mixer(mixup, cutmix, label_smoothing, self.num_classes)
        # class_weights "balanced": set in on_fit_start; a plain attribute, so no checkpoint depends on it
        self.class_weight: torch.Tensor | None = None
        self.val_metrics = _metrics(self.num_classes, "val/")
        # a metric object, not a logged tensor: plateau reads the epoch's value before Lightning reduces logs
        self.val_loss = torchmetrics.MeanMetric()
        self.test_metrics = _metrics(self.num_classes, "test/")
        # Expected calibration error (15 bins, L1): are the scores honest probabilities?
        self.test_metrics.add_metrics(
            {
                "ece": torchmetrics.classification.MulticlassCalibrationError(
                    self.num_classes, n_bins=15, norm="l1"
                )
            }
        )
        self.val_acc_best = torchmetrics.MaxMetric()
        self.val_acc_best.persistent(True)  # saved in checkpoints, so a resumed run knows its best
        self.loss_trace: list[float] | None = None  # raw per-step losses, recorded for the LR finder
        # this epoch's training sums: (epoch, tensor (loss x images, correct), images)
        self._train_sums: tuple[int, torch.Tensor, int] | None = None
        self._train_means: tuple[tuple[int, int], dict[str, float]] | None = None  # the last all-reduce's
        self.info: dict[str, Any] = {}  # where a loaded model came from (set by load_checkpoint)
        self.net: nn.Module

    @property
    def data_config(self) -> dict[str, Any]:
        """What preprocessing this model expects: everything `zoo predict` needs besides weights."""
        h = self.hparams
        return {k: h[k] for k in ("class_names", "image_size", "channels", "interpolation")} | {
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net((x - self.mean) / self.std)  # (B, C, H, W) in [0, 1] -> (B, num_classes)
        t = self.hparams.temperature
        return logits if t == 1 else logits / t  # exports trace it: a calibrated ONNX file is calibrated too

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] images (B, C, H, W) -> the features the net's final Linear reads (B, F)."""
        x = images.float().div(255) if images.dtype == torch.uint8 else images
        x = (x - self.mean) / self.std
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        # Loaders send uint8 (4x fewer bytes); scale on the device.
        images = images.float().div_(255) if images.dtype == torch.uint8 else images
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels

    @functools.cached_property
    def channels_last(self) -> bool:
        """NHWC for conv nets: faster on GPUs and on oneDNN CPUs (1.3x fp32, 2.4x bf16 measured for zoo's CNN)."""
        return any(isinstance(m, nn.Conv2d) for m in self.net.modules())

    @classmethod
    def data_defaults(cls, init_args: dict[str, Any]) -> dict[str, Any]:
        """Preprocessing this model wants unless the user sets it (timm: the pretrained weights' own)."""
        return {}

    def prepare_start(self, datamodule: L.LightningDataModule) -> None:
        """Ready the starting weights of a new (not resumed) fit; called once, before any training."""

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.channels_last:
            # Before Lightning wraps the model: DDP lays out its gradient buckets as the parameters are then.
            self.to(memory_format=torch.channels_last)

    def on_fit_start(self) -> None:
        if self.hparams.class_weights == "balanced":
            self.class_weight = balanced_weights(self.trainer.datamodule, self.num_classes).to(self.device)
            if getattr(self.trainer.datamodule, "sampler", None) == "balanced":
                info(
                    "note: --model.class_weights balanced with --data.sampler balanced corrects the imbalance "
                    "twice (the minority then outweighs the rest); keep one of them"
                )
        if self.channels_last:  # again: layers made since setup (none in DDP, where they would be too late)
            self.to(memory_format=torch.channels_last)
        if not self.trainer.ckpt_path:  # a resumed run has its weights from the checkpoint
            self.prepare_start(self.trainer.datamodule)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        images, targets = mix(self.mixer, images, labels)
        logits = self(images)
        loss = cross_entropy(logits, targets, self.class_weight, self.hparams.label_smoothing)
        penalty = l1_penalty(self.net, self.hparams.l1) if self.hparams.l1 > 0 else None
        if penalty is not None:
            loss = loss + penalty
        # Lightning's self.log costs 0.7-1.2 ms a call (measured in benchmarks/loop_overhead.py), a few % of a
        # small net's step. So step values are logged only on the steps the loggers write (the test Lightning's
        # LearningRateMonitor makes), and the epoch's loss and accuracy are summed here and logged once.
        if self.trainer._logger_connector.should_update_logs:
            self.log("train/loss", loss, on_step=True, prog_bar=True)
            if penalty is not None:
                self.log("train/l1", penalty, on_step=True)
        self._sum_train_epoch(loss, logits, labels)  # with mixing: against each image's own (main) label
        return loss

    def on_train_start(self) -> None:
        # A fit starts its sums afresh: the LR finder's sweep runs as a fit of its own, at the same epoch 0.
        self._train_sums = self._train_means = None
        if self.trainer.ckpt_path:
            resume_lrs(self.trainer)  # a resume with a larger max_epochs starts on the stretched schedule

    def _sum_train_epoch(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if self._train_sums is None or self._train_sums[0] != self.current_epoch:
            self._train_sums = (self.current_epoch, torch.zeros(2, device=self.device), 0)
        epoch, sums, images = self._train_sums
        sums += torch.stack(
            (loss.detach().float() * len(labels), (logits.argmax(-1) == labels).sum().float())
        )
        self._train_sums = (epoch, sums, images + len(labels))

    def train_epoch_metrics(self) -> dict[str, float]:
        """This epoch's training loss and accuracy so far, means over every process's images.

        RunReport reads them before this module's on_train_epoch_end logs them (Lightning calls callbacks
        first), so both call this; in a multi-process run every process calls it alike. The second call, with
        no step between, reuses the first's all-reduce.
        """
        if self._train_sums is None or self._train_sums[0] != self.current_epoch:
            return {}
        epoch, sums, images = self._train_sums
        if self._train_means is not None and self._train_means[0] == (epoch, images):
            return self._train_means[1]
        totals = torch.cat((sums, sums.new_tensor([images])))  # (loss x images, correct, images)
        loss, correct, seen = self.trainer.strategy.reduce(totals, reduce_op="sum").tolist()
        means = {"train/loss_epoch": loss / seen, "train/acc": correct / seen}
        self._train_means = ((epoch, images), means)
        return means

    def on_train_epoch_end(self) -> None:
        for key, value in self.train_epoch_metrics().items():
            self.log(
                key, value, sync_dist=True
            )  # already global; sync_dist says so (Lightning warns otherwise)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.loss_trace is not None:
            self.loss_trace.append(float(outputs["loss"]))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        self.val_loss.update(self.criterion(logits, labels), weight=len(labels))
        self.val_metrics.update(logits, labels)
        return logits  # for callbacks that look at predictions (zoo.dashboard)

    def on_validation_epoch_end(self) -> None:
        # torchmetrics' compute() has already gathered every process's images; sync_dist here only averages
        # equal values (and tells Lightning the epoch values are global, which it otherwise warns about).
        loss = self.val_loss.compute()
        self.val_loss.reset()
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        acc = values.pop("val/acc")
        self.log("val/acc", acc, prog_bar=True, sync_dist=True)
        self.log_dict(values, sync_dist=True)
        # the untrained sanity pass is no "best", and a best-so-far means nothing to `zoo validate`
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self.val_acc_best(acc)
            self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)
            self._step_plateau(loss)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.log("test/loss", self.criterion(logits, labels), on_epoch=True, sync_dist=True)
        self.test_metrics.update(logits, labels)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images).softmax(dim=-1)

    # --- optimisation ------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups, each with its weight decay and lr scale (the lr is `lr * lr_scale`).

        No weight decay on biases and norm weights (timm's and fastai's default too).
        """
        params = list(self.net.parameters())
        return [
            {
                "params": [p for p in params if p.ndim > 1],
                "weight_decay": self.hparams.weight_decay,
                "lr_scale": 1.0,
            },
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lr_scale": 1.0},
        ]

    def configure_optimizers(self) -> Any:
        if self.lr == "auto":
            raise ZooError("--model.lr auto needs the LR finder: run it through `zoo fit` (or pass a number)")
        h = self.hparams
        lr = float(self.lr)
        groups = [
            {"params": g["params"], "lr": lr * g["lr_scale"], "weight_decay": g["weight_decay"]}
            for g in self.param_groups()
            if g["params"]
        ]
        opt = build_optimizer(h.optimizer, groups, lr, h.momentum, h.nesterov)
        if h.scheduler == "constant" and h.warmup_epochs <= 0:
            return opt  # no schedule to run (and none needs the trainer's step count)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = max(1, total // max(1, int(self.trainer.max_epochs or 1)))
        names = ScheduleConfig.__dataclass_fields__
        cfg = ScheduleConfig(**{k: h[k] for k in names if h[k] is not None})  # milestones None: the default
        # zoo.pruning.LotteryTicket trains in rounds: the schedule restarts with each (plateau goes on)
        rounds = getattr(self, "schedule_rounds", 1)
        return {"optimizer": opt, "lr_scheduler": build_scheduler(opt, cfg, per_epoch, total, rounds)}

    def _step_plateau(self, val_loss: torch.Tensor) -> None:
        """Step reduce-on-plateau here, before the epoch's checkpoints are written.

        Lightning steps it after they are saved, so a resumed run would lose that epoch's step (and
        its lr cut); stepped here, last.ckpt holds exactly the state an uninterrupted run goes on with.
        """
        for config in self.trainer.lr_scheduler_configs:
            if config.reduce_on_plateau:
                config.scheduler.step(float(val_loss))

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            return  # stepped in on_validation_epoch_end (see _step_plateau)
        super().lr_scheduler_step(scheduler, metric)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["zoo"] = {"family": self.family, "version": zoo.__version__}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The CLI links the data's classes and preprocessing into the model; a checkpoint trained
        # on other classes or statistics would load its weights and then be silently wrong.
        saved = checkpoint.get("hyper_parameters", {})
        for key in ("class_names", "image_size", "channels", "mean", "std", "interpolation"):
            if key in saved and _plain(saved[key]) != _plain(self.hparams[key]):
                raise ZooError(
                    f"the checkpoint was trained with {key}={_plain(saved[key])} but this data gives "
                    f"{_plain(self.hparams[key])}; use the data (and --data.* options) it was trained with"
                )


def __getattr__(name: str) -> Any:
    """Run configs written before the families moved out name them zoo.classifier.X: still found."""
    moved = {"MLPClassifier": "zoo.scratch", "CNNClassifier": "zoo.scratch", "TimmClassifier": "zoo.finetune"}
    if name in moved:
        return getattr(importlib.import_module(moved[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
