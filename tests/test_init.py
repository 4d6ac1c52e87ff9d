"""Weight init schemes and the course's activations: applied to the nets, reachable from the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import FAST
from zoo.scratch import CNNClassifier, MLPClassifier

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def first_linear(init: str) -> nn.Linear:
    torch.manual_seed(0)
    model = MLPClassifier(class_names=["a", "b"], image_size=32, channels=1, hidden_sizes=(256,), init=init)
    return next(m for m in model.net.modules() if isinstance(m, nn.Linear))  # 1024 -> 256


@pytest.mark.parametrize(
    ("init", "std"),
    [
        ("lecun", 1 / math.sqrt(1024)),
        ("kaiming", math.sqrt(2 / 1024)),
        ("xavier", math.sqrt(2 / (1024 + 256))),
    ],
)
def test_init_gives_each_schemes_weight_scale(init, std):
    layer = first_linear(init)
    assert float(layer.weight.std()) == pytest.approx(std, rel=0.03)


def test_orthogonal_and_default_and_biases():
    w = first_linear("orthogonal").weight  # (256, 1024): orthonormal rows
    assert torch.allclose(w @ w.T, torch.eye(256), atol=1e-4)
    default = first_linear("default").weight
    assert float(default.std()) == pytest.approx(1 / math.sqrt(3 * 1024), rel=0.03)  # torch's own
    cnn = CNNClassifier(class_names=["a", "b"], image_size=16, channels=3, channels_per_block=(8,), batch_norm=False,
                        init="kaiming")  # fmt: skip
    convs = [m for m in cnn.net.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(float(c.bias.abs().max()) == 0.0 for c in convs)


@pytest.mark.parametrize(
    "activation", ["leaky_relu", "prelu", "elu", "gelu", "silu", "mish", "tanh", "sigmoid"]
)
def test_course_activations_build(activation):
    model = MLPClassifier(
        class_names=["a", "b"], image_size=8, channels=1, hidden_sizes=(16,), activation=activation
    )
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 2)


def test_selu_with_lecun_init_from_the_cli(run_zoo, image_folder):
    rc, runs = run_zoo("fit", "--config", CONFIGS / "mlp.yaml", "--data.root", image_folder, "--model.activation",
                       "selu", "--model.init", "lecun", "--model.batch_norm", "false", "--model.dropout", 0.0,
                       *FAST, "--trainer.logger", "false")  # fmt: skip
    assert rc == 0
    hparams = torch.load(next(runs.rglob("last.ckpt")), weights_only=True)["hyper_parameters"]
    assert hparams["init"] == "lecun" and hparams["activation"] == "selu"
