"""Fine-tuning a pretrained timm backbone: starting weights, the linear probe, the freeze policy, layer-wise lrs."""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any

import lightning as L
import timm
import timm.data
import timm.optim
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from zoo.classifier import ImageClassifier, check_dropout
from zoo.console import console
from zoo.errors import ZooError
from zoo.pretrained import load_pretrained
from zoo.probe import accuracy, extract_features, fit_head
from zoo.registry import register
from zoo.weights import create_timm_net


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
        check_dropout(locals())
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
