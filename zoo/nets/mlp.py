"""A multi-layer perceptron over flattened pixels."""

from __future__ import annotations

import torch
from torch import nn

from zoo.nets.layers import activation_layer


class MLP(nn.Module):
    """Flatten -> [Linear -> (BatchNorm) -> activation -> Dropout] * len(hidden_sizes) -> Linear.

    Args:
        num_classes: outputs of the head.
        in_chans: image channels.
        image_size: image side; the input layer has in_chans * image_size**2 features.
        hidden_sizes: width of each hidden layer.
        activation: any timm activation name (relu, gelu, silu, leaky_relu, tanh, ...).
        dropout: dropout after each hidden layer.
        batch_norm: BatchNorm1d after each hidden Linear.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int,
        image_size: int,
        hidden_sizes: tuple[int, ...] = (512, 256),
        activation: str = "relu",
        dropout: float = 0.2,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        act = activation_layer(activation)
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_chans * image_size * image_size
        for hidden in hidden_sizes:
            layers.append(nn.Linear(width, hidden, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers += [act(), nn.Dropout(dropout)]
            width = hidden
        self.features = nn.Sequential(*layers)
        self.num_features = width
        self.head = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, H, W) -> (B, num_features)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, num_features) -> (B, num_classes); `pre_logits`: the features themselves (timm's API)."""
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
