"""An explicit L1 penalty and class-weighted loss, applied in training and reachable from the CLI."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch

from tests.conftest import FAST, make_folder
from zoo.loss import balanced_weights

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_balanced_weights_follow_sklearns_rule():
    data = SimpleNamespace(splits={"train": SimpleNamespace(labels=np.array([0] * 6 + [1] * 2 + [2] * 1))})
    weights = balanced_weights(data, 4)
    assert weights.tolist() == pytest.approx([9 / (4 * 6), 9 / (4 * 2), 9 / (4 * 1), 0.0])


def _first_step(run: Path) -> dict[str, str]:
    with open(run / "metrics.csv") as f:
        return next(r for r in csv.DictReader(f) if r.get("train/loss"))


def test_l1_penalty_is_logged_and_added(run_zoo, image_folder):
    args = ["fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, *FAST, "--trainer.logger", "CSVLogger"]  # fmt: skip
    rc, runs = run_zoo(*args, "--model.l1", 1e-4)
    assert rc == 0
    run = next((runs / "cnn").iterdir())
    first = _first_step(run)
    model = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert float(first["train/l1"]) == pytest.approx(
        1e-4 * sum(float(v.abs().sum()) for k, v in model.items() if k.startswith("net.") and v.ndim > 1),
        rel=0.2,
    )  # the penalty is 1e-4 * sum|w| (weights moved a little since the first step)
    assert run_zoo(*args)[0] == 0  # same seed without L1: the same weights and batch at step 0
    plain = _first_step(sorted((runs / "cnn").iterdir())[-1])
    assert "train/l1" not in plain or not plain["train/l1"]
    # the loss that is optimised (and logged) is the cross-entropy plus the penalty
    assert float(first["train/loss"]) - float(plain["train/loss"]) == pytest.approx(
        float(first["train/l1"]), rel=1e-3
    )


class WeightedLossProbe(L.Callback):
    """Recomputes the first step's loss with sklearn's balanced weights, counted here from the training labels:
    n / (classes * n_class). The recipe's dropout must be 0, so the step's logits are the net's output."""

    checked: dict | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0 and batch_idx == 0:
            labels = torch.as_tensor(trainer.datamodule.splits["train"].labels)
            counts = torch.bincount(labels, minlength=pl_module.num_classes).float()
            weight = len(labels) / (pl_module.num_classes * counts)
            with torch.no_grad():
                expected = torch.nn.functional.cross_entropy(
                    pl_module(batch[0]),
                    batch[1],
                    weight=weight,
                    label_smoothing=pl_module.hparams.label_smoothing,
                )
            self.expected, self.weight = float(expected), weight.tolist()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 1:
            WeightedLossProbe.checked = {"expected": self.expected, "loss": float(outputs["loss"]),
                                         "weight": self.weight, "val_weight": pl_module.criterion.weight}  # fmt: skip


def test_balanced_class_weights_train_and_checkpoints_load_anywhere(run_zoo, tmp_path):
    root = make_folder(tmp_path / "imbalanced", classes=("common",), n=30)
    make_folder(root, classes=("rare",), n=6)
    WeightedLossProbe.checked = None
    rc, runs = run_zoo("fit", "--config", CONFIGS / "cnn.yaml", "--data.root", root, *FAST,
                       "--model.class_weights", "balanced", "--model.head_dropout", 0, "--trainer.logger", "false",
                       "--trainer.callbacks+=tests.test_regularisation.WeightedLossProbe")  # fmt: skip
    assert rc == 0
    checked = WeightedLossProbe.checked
    assert (
        checked is not None and checked["weight"][1] > 1 > checked["weight"][0]
    )  # the rare class counts more
    assert checked["loss"] == pytest.approx(checked["expected"], rel=1e-5)  # the loss trained on is weighted
    assert checked["val_weight"] is None  # val/loss stays the plain cross-entropy, comparable across runs
    ckpt = next(runs.rglob("best.ckpt"))
    assert not any(
        "weight" in k and "criterion" in k for k in torch.load(ckpt, weights_only=True)["state_dict"]
    )
    from zoo.checkpoint import load_checkpoint

    assert load_checkpoint(ckpt).hparams.class_weights == "balanced"


def test_weights_and_balanced_sampler_together_get_a_note(run_zoo, image_folder, capsys):
    rc, _ = run_zoo("fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, *FAST, "--data.sampler",
                    "balanced", "--model.class_weights", "balanced", "--trainer.logger", "false")  # fmt: skip
    assert rc == 0 and "corrects the imbalance twice" in capsys.readouterr().err


def test_mean_and_std_auto_are_measured_on_the_training_images(run_zoo, tmp_path, capsys):
    from PIL import Image

    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / "two" / name).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (16, 16), colour).save(tmp_path / "two" / name / f"{i}.png")
    rc, runs = run_zoo("fit", "--config", CONFIGS / "cnn.yaml", "--data.root", tmp_path / "two", *FAST,
                       "--data.mean", "auto", "--data.std", "auto", "--trainer.logger", "false")  # fmt: skip
    assert rc == 0
    assert (
        "data: mean [0.5, 0.0, 0.5], std [0.5, 0.01, 0.5], from 16 training images" in capsys.readouterr().err
    )
    hparams = torch.load(next(runs.rglob("last.ckpt")), weights_only=True)["hyper_parameters"]
    assert hparams["mean"] == pytest.approx([0.5, 0.0, 0.5]) and hparams["std"] == pytest.approx(
        [0.5, 0.01, 0.5], abs=1e-4
    )


class MixProbe(L.Callback):
    """Records, per training step, the share of input pixels that differ from the loader's images, and the
    soft targets the model's mixer made."""

    changed: list[float] = []
    targets: list[torch.Tensor] = []
    classes = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        mixer = pl_module.mixer

        def mix_and_record(images, labels):
            images, targets = mixer(images, labels)
            MixProbe.targets.append(targets.clone())
            return images, targets

        pl_module.mixer = mix_and_record
        MixProbe.classes = pl_module.num_classes

        def record(_module, inputs) -> None:
            if not pl_module.training:
                return  # validation
            seen = inputs[0] * pl_module.std + pl_module.mean  # undo the model's normalisation
            MixProbe.changed.append(float(((seen - self.batch).abs() > 1e-4).float().mean()))

        pl_module.net.register_forward_pre_hook(record)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch = batch[0].clone()  # timm mixes in place, after this hook


@pytest.mark.parametrize(("option", "share"), [("mixup", (0.9, 1.0)), ("cutmix", (0.0, 0.99))])
def test_mixup_blends_whole_images_and_cutmix_pastes_a_box(run_zoo, image_folder, option, share):
    MixProbe.changed, MixProbe.targets = [], []
    rc, _ = run_zoo("fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, *FAST,
                    "--data.batch_size", 8, f"--model.{option}", 1.0, "--model.label_smoothing", 0.1,
                    "--trainer.logger", "false", "--trainer.callbacks+=tests.test_regularisation.MixProbe")  # fmt: skip
    assert rc == 0 and len(MixProbe.changed) == 3  # 24 images, batches of 8
    assert all(share[0] < c <= share[1] for c in MixProbe.changed), MixProbe.changed
    targets = torch.cat(MixProbe.targets)  # (24, classes): each image's mix of two smoothed one-hot labels
    assert MixProbe.classes >= 3 and targets.shape == (24, MixProbe.classes)
    assert targets.sum(1) == pytest.approx(torch.ones(24))
    # label smoothing is in the soft targets: a class neither image is gets 0.1 / classes, not 0
    assert targets.min(1).values == pytest.approx(torch.full((24,), 0.1 / MixProbe.classes))


def test_mixing_refuses_class_weights(run_zoo, image_folder, capsys):
    rc, _ = run_zoo("fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, *FAST,
                    "--model.mixup", 0.4, "--model.class_weights", "balanced")  # fmt: skip
    assert rc == 2 and "use --data.sampler balanced" in capsys.readouterr().err
