"""An explicit L1 penalty and class-weighted loss, applied in training and reachable from the CLI."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.conftest import FAST, make_folder
from zoo.classifier import balanced_weights

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_balanced_weights_follow_sklearns_rule():
    data = SimpleNamespace(splits={"train": SimpleNamespace(labels=np.array([0] * 6 + [1] * 2 + [2] * 1))})
    weights = balanced_weights(data, 4)
    assert weights.tolist() == pytest.approx([9 / (4 * 6), 9 / (4 * 2), 9 / (4 * 1), 0.0])


def test_l1_penalty_is_logged_and_added(run_zoo, image_folder):
    rc, runs = run_zoo("fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, *FAST,
                       "--model.l1", 1e-4, "--trainer.logger", "CSVLogger")  # fmt: skip
    assert rc == 0
    run = next((runs / "cnn").iterdir())
    with open(run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/l1")]
    model = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert rows and float(rows[0]["train/l1"]) > 0
    assert float(rows[0]["train/l1"]) == pytest.approx(
        1e-4 * sum(float(v.abs().sum()) for k, v in model.items() if k.startswith("net.") and v.ndim > 1),
        rel=0.2,
    )  # the penalty is 1e-4 * sum|w| (weights moved a little since the first step)


def test_balanced_class_weights_train_and_checkpoints_load_anywhere(run_zoo, tmp_path):
    root = make_folder(tmp_path / "imbalanced", classes=("common",), n=30)
    make_folder(root, classes=("rare",), n=6)
    first_losses = []
    for weights in ("none", "balanced"):
        rc, runs = run_zoo("fit", "--config", CONFIGS / "cnn.yaml", "--data.root", root, *FAST,
                           "--model.class_weights", weights, "--trainer.logger", "CSVLogger")  # fmt: skip
        assert rc == 0
        run = sorted((runs / "cnn").iterdir())[-1]
        with open(run / "metrics.csv") as f:
            first_losses.append(
                next(float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss"))
            )
    assert first_losses[0] != pytest.approx(
        first_losses[1], abs=1e-4
    )  # same seed, same batch: the weights act
    ckpt = run / "checkpoints" / "best.ckpt"
    assert not any(
        "weight" in k and "criterion" in k for k in torch.load(ckpt, weights_only=True)["state_dict"]
    )
    from zoo.checkpoint import load_checkpoint

    assert load_checkpoint(ckpt).hparams.class_weights == "balanced"


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
