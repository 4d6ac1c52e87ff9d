"""The classification system (loss, metrics, optimiser, schedule, logging) and its three families."""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from typing import Any, Literal

import lightning as L
import timm
import timm.data
import timm.optim
import torch
import torchmetrics
from rich.console import Console
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import zoo
from zoo.errors import ZooError
from zoo.nets import CNN, MLP
from zoo.nets.layers import Init, init_weights
from zoo.optimizers import Optimizer, build_optimizer
from zoo.pretrained import load_pretrained
from zoo.probe import accuracy, extract_features, fit_head
from zoo.registry import register
from zoo.schedules import ScheduleConfig, Scheduler, build_scheduler
from zoo.weights import create_timm_net

console = Console(stderr=True, soft_wrap=True)


def balanced_weights(datamodule: Any, num_classes: int) -> torch.Tensor:
    """n / (classes * n_class) per class of the training split (sklearn's "balanced"); absent classes get 0."""
    labels = torch.as_tensor(datamodule.splits["train"].labels)
    counts = torch.bincount(labels, minlength=num_classes).float()
    return torch.where(counts > 0, len(labels) / (num_classes * counts.clamp(min=1)), torch.zeros(()))


def _check_dropout(args: dict[str, Any]) -> None:
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
        class_weights: "balanced" weighs each class's training loss by n / (classes * n_class) (sklearn's
            rule), for imbalanced folders; "none" weighs all alike. val/loss stays unweighted.
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
        l1: float = 0.0,
        class_weights: Literal["none", "balanced"] = "none",
    ) -> None:
        super().__init__()
        if not class_names or len(class_names) < 2:
            raise ZooError(f"a classifier needs at least 2 classes, got {class_names!r}")
        if lr != "auto" and not lr > 0:
            raise ZooError(f"--model.lr must be above 0 (or auto), got {lr}")
        if not 0 <= label_smoothing < 1:
            raise ZooError(f"--model.label_smoothing must be in [0, 1), got {label_smoothing}")
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
        # class_weights "balanced": set in on_fit_start; a plain attribute, so no checkpoint depends on it
        self.class_weight: torch.Tensor | None = None
        self.train_acc = torchmetrics.classification.MulticlassAccuracy(self.num_classes, average="micro")
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
        return self.net((x - self.mean) / self.std)  # (B, C, H, W) in [0, 1] -> (B, num_classes)

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

    def on_fit_start(self) -> None:
        if self.hparams.class_weights == "balanced":
            self.class_weight = balanced_weights(self.trainer.datamodule, self.num_classes).to(self.device)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if not self.trainer.ckpt_path:  # a resumed run has its weights from the checkpoint
            self.prepare_start(self.trainer.datamodule)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = nn.functional.cross_entropy(
            logits, labels, weight=self.class_weight, label_smoothing=self.hparams.label_smoothing
        )
        if self.hparams.l1 > 0:
            # torch has no L1 option in its optimisers; the penalty is the course's definition, on the weights
            penalty = self.hparams.l1 * sum(p.abs().sum() for p in self.net.parameters() if p.ndim > 1)
            self.log("train/l1", penalty, on_step=True)
            loss = loss + penalty
        self.train_acc(logits, labels)
        self.log("train/loss", loss, on_step=True, prog_bar=True)
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.loss_trace is not None:
            self.loss_trace.append(float(outputs["loss"]))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.val_loss.update(self.criterion(logits, labels), weight=len(labels))
        self.val_metrics.update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.val_loss.reset()
        self.log("val/loss", loss, prog_bar=True)
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        acc = values.pop("val/acc")
        self.log("val/acc", acc, prog_bar=True)
        self.log_dict(values)
        # the untrained sanity pass is no "best", and a best-so-far means nothing to `zoo validate`
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self.val_acc_best(acc)
            self.log("val/acc_best", self.val_acc_best.compute())
            self._step_plateau(loss)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.log("test/loss", self.criterion(logits, labels), on_epoch=True)
        self.test_metrics.update(logits, labels)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
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
        return {"optimizer": opt, "lr_scheduler": build_scheduler(opt, cfg, per_epoch, total)}

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


@register("mlp")
class MLPClassifier(ImageClassifier):
    """A multi-layer perceptron on flattened pixels (see zoo.nets.MLP for the arguments).

    Args:
        hidden_sizes: width of each hidden layer.
        activation: timm activation name: relu, leaky_relu, prelu, elu, selu, gelu, silu (swish), mish, tanh,
            sigmoid, ... (SELU wants --model.init lecun and no batch norm).
        dropout: dropout after each hidden layer.
        batch_norm: BatchNorm1d after each hidden layer.
        init: weight init: default (torch's), xavier, kaiming, lecun or orthogonal (zoo.nets.layers).
        **kwargs: the shared ImageClassifier arguments (lr, scheduler, label_smoothing, ...).
    """

    def __init__(
        self,
        hidden_sizes: tuple[int, ...] = (512, 256),
        activation: str = "relu",
        dropout: float = 0.2,
        batch_norm: bool = True,
        init: Init = "default",
        **kwargs: Any,
    ) -> None:
        _check_dropout(locals())
        super().__init__(**kwargs)
        h = self.hparams
        self.net = MLP(
            self.num_classes,
            h.channels,
            h.image_size,
            tuple(hidden_sizes),
            activation,
            dropout,
            batch_norm,
        )
        init_weights(self.net, init)


@register("cnn")
class CNNClassifier(ImageClassifier):
    """A VGG-style CNN trained from scratch (see zoo.nets.CNN for the arguments).

    Args:
        channels_per_block: output channels of each conv block.
        kernel_size: conv kernel size.
        convs_per_block: convs in each block.
        pool: "max" or "avg".
        batch_norm: BatchNorm2d after each conv.
        activation: timm activation name (see MLPClassifier).
        dropout: Dropout2d after each block.
        head_dropout: dropout before the classifier.
        init: weight init: default, xavier, kaiming, lecun or orthogonal.
        **kwargs: the shared ImageClassifier arguments.
    """

    def __init__(
        self,
        channels_per_block: tuple[int, ...] = (32, 64, 128),
        kernel_size: int = 3,
        convs_per_block: int = 2,
        pool: Literal["max", "avg"] = "max",
        batch_norm: bool = True,
        activation: str = "relu",
        dropout: float = 0.1,
        head_dropout: float = 0.3,
        init: Init = "default",
        **kwargs: Any,
    ) -> None:
        _check_dropout(locals())
        super().__init__(**kwargs)
        size = self.hparams.image_size
        if size >> len(channels_per_block) < 1:
            raise ZooError(
                f"{len(channels_per_block)} conv blocks halve {size} px below 1 px; "
                f"use at most {size.bit_length() - 1} blocks or a larger --data.image_size"
            )
        self.net = CNN(
            self.num_classes,
            self.hparams.channels,
            tuple(channels_per_block),
            kernel_size,
            convs_per_block,
            pool,
            batch_norm,
            activation,
            dropout,
            head_dropout,
        )
        init_weights(self.net, init)


@register("timm")
class TimmClassifier(ImageClassifier):
    """Fine-tune any timm backbone: a linear probe, the head alone for `freeze_epochs`, then every layer.

    Starting weights are loaded when a new fit starts (`prepare_start`), never in `__init__`, so
    resuming, validating and predicting read nothing but the checkpoint. The freeze state is a pure
    function of the epoch, applied at each epoch start, so a run resumed from any checkpoint is in
    the right state. (Lightning's BaseFinetuning keeps it in callback and optimizer state, which
    has known resume bugs.) The optimizer holds every parameter from the start; frozen ones simply
    get no gradient and no update.

    Args:
        backbone: any timm model name (resnet18, tf_efficientnet_lite0, convnext_tiny, ...).
        pretrained: start from pretrained weights: `weights` if given, else timm's hub or cache,
            else a copy shipped in an installed package (zoo.pretrained.PACKAGED).
        weights: a local weights file (.safetensors, .pth or a zoo .ckpt); wins over the hub.
        probe_epochs: before training, fit the head for this many epochs on the frozen backbone's
            features of the (unaugmented) training images, computed once; 0 = no probe.
        probe_lr: the probe's AdamW learning rate.
        freeze_epochs: epochs that train the head only (backbone frozen, its BatchNorm in eval mode);
            at least max_epochs keeps the backbone frozen throughout (a linear probe).
        freeze_bn_stats: keep the backbone's BatchNorm layers in eval mode throughout, so their running
            statistics stay the pretrained ones (their scale and shift still train once unfrozen).
            Small data give noisy batch statistics, and a probed head expects the features it was fitted on.
        backbone_lr_mult: once unfrozen, the backbone's top layer learns at lr * this.
        layer_decay: each earlier layer group of the backbone learns at this times the next one's lr
            (layer-wise / discriminative learning rates, by timm's param_groups_layer_decay).
        drop_rate: dropout before the classifier.
        **kwargs: the shared ImageClassifier arguments.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        pretrained: bool = True,
        weights: str | None = None,
        probe_epochs: int = 0,
        probe_lr: float = 1e-3,
        freeze_epochs: int = 1,
        freeze_bn_stats: bool = False,
        backbone_lr_mult: float = 0.1,
        layer_decay: float = 1.0,
        drop_rate: float = 0.0,
        **kwargs: Any,
    ) -> None:
        _check_dropout(locals())
        super().__init__(**kwargs)
        h = self.hparams
        self.net = create_timm_net(backbone, self.num_classes, h.channels, drop_rate=drop_rate)
        if (pretrained or weights) and h.channels == 3:
            self._check_normalisation()
        head = self.net.get_classifier()
        head_ids = {id(p) for p in head.parameters()}
        self.head_params = list(head.parameters())
        self.backbone_params = [p for p in self.net.parameters() if id(p) not in head_ids]
        self.backbone_frozen = False
        self.started = False  # starting weights loaded and probe done (prepare_start)

    @classmethod
    def data_defaults(cls, init_args: dict[str, Any]) -> dict[str, Any]:
        """The mean, std and interpolation the backbone was pretrained with (timm's pretrained config)."""
        if not (init_args.get("pretrained", True) or init_args.get("weights")):
            return {}
        backbone = init_args.get("backbone", "resnet18")
        cfg = timm.get_pretrained_cfg(backbone) if timm.is_model(backbone) else None
        if cfg is None:
            return {}
        return {"mean": list(cfg.mean), "std": list(cfg.std), "interpolation": cfg.interpolation}

    def _check_normalisation(self) -> None:
        """Pretrained weights expect their own mean/std (timm's data config): say so if the data differs."""
        expected = timm.data.resolve_model_data_config(self.net)
        got = (self.mean.flatten().tolist(), self.std.flatten().tolist())
        want = (list(expected["mean"]), list(expected["std"]))
        if any(abs(a - b) > 1e-3 for g, w in zip(got, want, strict=True) for a, b in zip(g, w, strict=True)):
            warnings.warn(
                f"{self.hparams.backbone} was pretrained with mean={[round(v, 4) for v in want[0]]}, "
                f"std={[round(v, 4) for v in want[1]]} but the data normalises with mean={got[0]}, std={got[1]}; "
                f"leave --data.mean and --data.std unset to use the pretrained values",
                stacklevel=2,
            )

    # --- starting a fit ----------------------------------------------------------------------
    def prepare_start(self, datamodule: L.LightningDataModule) -> None:
        if self.started:
            return
        h = self.hparams
        if h.pretrained or h.weights:
            load_pretrained(self.net, h.backbone, h.weights, list(h.class_names))
        if h.probe_epochs > 0:
            self.linear_probe(datamodule)
        self.started = True

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] images (B, C, H, W) -> the backbone's pooled features (B, F)."""
        x = images.float().div(255) if images.dtype == torch.uint8 else images
        x = (x - self.mean) / self.std
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

    def linear_probe(self, datamodule: L.LightningDataModule) -> None:
        """Fit the head on cached features of the training images (no augmentation); log its val acc."""
        h = self.hparams
        head = self.net.get_classifier()
        if not isinstance(head, nn.Linear):
            raise ZooError(
                f"--model.probe_epochs needs a linear classifier; {h.backbone}'s head is {type(head).__name__}"
            )
        if datamodule is None:
            raise ZooError(
                "--model.probe_epochs needs a data module (zoo fit has one); pass datamodule= to fit"
            )
        start = time.perf_counter()
        # Logistic regression starts from zero; timm's head init (uniform +-1/sqrt(classes)) gives large
        # random logits that a probe takes hundreds of epochs to forget (0.70 vs 0.80 val acc measured).
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        datamodule.setup("fit")
        was_training = self.training
        self.eval()
        with self._precision_context():
            train = extract_features(self.features, datamodule.eval_loader("train"), self.device)
            val = extract_features(self.features, datamodule.eval_loader("val"), self.device)
        seed = torch.initial_seed() % 2**31
        with torch.enable_grad():
            fit_head(head, *train, h.probe_epochs, h.probe_lr, h.weight_decay, h.label_smoothing, seed)
        self.train(was_training)
        acc = accuracy(head, *val)
        for logger in self._trainer.loggers if self._trainer is not None else []:
            logger.log_metrics({"probe/val_acc": acc}, step=0)
        console.print(
            f"[bold]linear probe[/] {h.probe_epochs} epochs on the features of {len(train[1])} images "
            f"in {time.perf_counter() - start:.1f} s: val/acc {acc:.4f}",
            highlight=False,
        )

    def _precision_context(self):
        trainer = self._trainer
        return trainer.precision_plugin.forward_context() if trainer is not None else contextlib.nullcontext()

    # --- optimisation ------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """timm's layer-wise groups; the backbone's top layer at backbone_lr_mult, decaying downwards."""
        h = self.hparams
        no_decay = self.net.no_weight_decay() if hasattr(self.net, "no_weight_decay") else ()
        groups = timm.optim.param_groups_layer_decay(
            self.net, weight_decay=h.weight_decay, no_weight_decay_list=no_decay, layer_decay=h.layer_decay
        )
        head_ids = {id(p) for p in self.head_params}
        for group in groups:
            if not all(id(p) in head_ids for p in group["params"]):
                # timm scales the layer under the head by layer_decay: start the backbone at 1 instead
                group["lr_scale"] = h.backbone_lr_mult * group["lr_scale"] / h.layer_decay
        return groups

    def set_backbone_frozen(self, frozen: bool) -> None:
        self.backbone_frozen = frozen
        for p in self.backbone_params:
            p.requires_grad_(not frozen)
        self.train(self.training)  # re-apply the BatchNorm mode

    def train(self, mode: bool = True) -> TimmClassifier:
        # Frozen BatchNorm layers stay in eval mode (running stats fixed) whatever calls .train().
        super().train(mode)
        if mode and (self.backbone_frozen or self.hparams.freeze_bn_stats):
            for module in self.net.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def on_train_epoch_start(self) -> None:
        self.set_backbone_frozen(self.current_epoch < self.hparams.freeze_epochs)
