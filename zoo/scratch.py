"""The families trained from scratch: an MLP and a VGG-style CNN, each a plain net in the shared system."""

from __future__ import annotations

from typing import Any, Literal

from zoo.classifier import ImageClassifier, check_dropout
from zoo.errors import ZooError
from zoo.nets import CNN, MLP
from zoo.nets.layers import Init, init_weights
from zoo.registry import register


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
        check_dropout(locals())
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
        check_dropout(locals())
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
