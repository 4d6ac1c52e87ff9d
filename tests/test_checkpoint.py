"""A checkpoint alone rebuilds the model and its preprocessing, for every family."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import FAST
from zoo.checkpoint import load_checkpoint
from zoo.errors import ZooError
from zoo.finetune import TimmClassifier
from zoo.scratch import CNNClassifier, MLPClassifier

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    ("config", "cls", "extra"),
    [
        ("mlp.yaml", MLPClassifier, ["--model.hidden_sizes", "[16]"]),
        ("cnn.yaml", CNNClassifier, []),
        (
            "resnet18_finetune.yaml",
            TimmClassifier,
            ["--model.backbone", "resnet10t", "--model.pretrained", "false"],
        ),
    ],
)
def test_load_checkpoint_gives_the_same_predictions(run_zoo, image_folder, config, cls, extra):
    rc, runs = run_zoo(
        "fit", "--config", CONFIGS / config, "--data.root", image_folder, "--data.image_size", 16,
        "--data.channels", 3, *extra, *FAST, "--trainer.logger", "false",
    )  # fmt: skip
    assert rc == 0
    path = next(runs.rglob("best.ckpt"))
    model = load_checkpoint(path)
    assert type(model) is cls and not model.training
    assert model.data_config["class_names"] == ["cat", "dog", "owl"]
    assert model.data_config["image_size"] == 16 and model.data_config["channels"] == 3
    state = torch.load(path, weights_only=True)["state_dict"]
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    x = torch.rand(2, 3, 16, 16)
    assert model(x).shape == (2, 3)


def test_not_a_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(ZooError, match="not found"):
        load_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ZooError, match="not a zoo checkpoint"):
        load_checkpoint(tmp_path / "other.ckpt")
