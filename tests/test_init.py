"""Weight init schemes and the course's activations: applied to the nets, reachable from the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import FAST
from zoo.checkpoint import load_checkpoint
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


# What each course activation computes, from torch's functional API (PReLU starts at slope 0.25)
FUNCTIONS = {
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "prelu": lambda x: F.prelu(x, torch.tensor([0.25])),
    "elu": F.elu,
    "selu": F.selu,
    "gelu": F.gelu,
    "silu": F.silu,
    "mish": F.mish,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}
NOT_ACTIVATIONS = (nn.Sequential, nn.Flatten, nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout,
                   nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)  # fmt: skip


def activations(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if not isinstance(m, NOT_ACTIVATIONS) and m is not net]


def assert_computes(layers: list[nn.Module], activation: str, expected_count: int) -> None:
    x = torch.linspace(-4, 4, 81)
    assert len(layers) == expected_count, layers
    for layer in layers:
        assert torch.allclose(layer(x), FUNCTIONS[activation](x), atol=1e-6), (activation, layer)


@pytest.mark.parametrize("activation", list(FUNCTIONS))
def test_course_activations_are_the_nets_activations(activation):
    mlp = MLPClassifier(
        class_names=["a", "b"], image_size=8, channels=1, hidden_sizes=(16, 8), activation=activation
    )
    assert mlp(torch.rand(2, 1, 8, 8)).shape == (2, 2)
    assert_computes(activations(mlp.net), activation, 2)  # one after each hidden layer
    cnn = CNNClassifier(class_names=["a", "b"], image_size=16, channels=1, channels_per_block=(4, 8),
                        activation=activation)  # fmt: skip
    assert_computes(activations(cnn.net), activation, 4)  # after each conv: 2 blocks x 2 convs


def test_selu_with_lecun_init_from_the_cli(run_zoo, image_folder):
    rc, runs = run_zoo("fit", "--config", CONFIGS / "mlp.yaml", "--data.root", image_folder, "--model.activation",
                       "selu", "--model.init", "lecun", "--model.batch_norm", "false", "--model.dropout", 0.0,
                       *FAST, "--trainer.logger", "false")  # fmt: skip
    assert rc == 0
    model = load_checkpoint(next(runs.rglob("last.ckpt")))
    assert model.hparams.init == "lecun"
    hidden = len(model.hparams.hidden_sizes)
    assert_computes(activations(model.net), "selu", hidden)  # the trained net's own layers
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.net.modules())
    assert all(m.p == 0.0 for m in model.net.modules() if isinstance(m, nn.Dropout))


@pytest.mark.parametrize("batch_norm", [True, False])
def test_dropout_head_dropout_and_batch_norm_build_the_nets(batch_norm):
    cnn = CNNClassifier(class_names=["a", "b"], image_size=16, channels=1, channels_per_block=(4, 8),
                        dropout=0.15, head_dropout=0.4, batch_norm=batch_norm)  # fmt: skip
    assert [m.p for m in cnn.net.modules() if isinstance(m, nn.Dropout2d)] == [0.15, 0.15]  # after each block
    assert [m.p for m in cnn.net.modules() if type(m) is nn.Dropout] == [0.4]  # before the head
    norms = [m for m in cnn.net.modules() if isinstance(m, nn.BatchNorm2d)]
    convs = [m for m in cnn.net.modules() if isinstance(m, nn.Conv2d)]
    assert len(norms) == (4 if batch_norm else 0) and all((c.bias is None) == batch_norm for c in convs)
    no_block_dropout = CNNClassifier(class_names=["a", "b"], image_size=16, channels=1, dropout=0.0)
    assert not any(isinstance(m, nn.Dropout2d) for m in no_block_dropout.net.modules())
    mlp = MLPClassifier(class_names=["a", "b"], image_size=8, channels=1, hidden_sizes=(16, 8), dropout=0.25,
                        batch_norm=batch_norm)  # fmt: skip
    assert [m.p for m in mlp.net.modules() if isinstance(m, nn.Dropout)] == [0.25, 0.25]
    assert len([m for m in mlp.net.modules() if isinstance(m, nn.BatchNorm1d)]) == (2 if batch_norm else 0)


def test_dropout_and_batch_norm_from_the_cli(run_zoo, image_folder):
    rc, runs = run_zoo("fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, "--model.dropout", 0.2,
                       "--model.head_dropout", 0.45, "--model.batch_norm", "false", *FAST,
                       "--trainer.logger", "false")  # fmt: skip
    assert rc == 0
    net = load_checkpoint(next(runs.rglob("last.ckpt"))).net
    assert {m.p for m in net.modules() if isinstance(m, nn.Dropout2d)} == {0.2}
    assert [m.p for m in net.modules() if type(m) is nn.Dropout] == [0.45]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
