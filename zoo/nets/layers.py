"""Small helpers shared by zoo's nets."""

from __future__ import annotations

from typing import Literal

from timm.layers import get_act_layer
from torch import nn

from zoo.errors import ZooError


def activation_layer(name: str) -> type[nn.Module]:
    """timm's activation registry, with a one-line error that lists the names."""
    try:
        return get_act_layer(name)
    except (KeyError, ValueError) as err:
        from timm.layers.create_act import _ACT_LAYER_DEFAULT

        raise ZooError(
            f"unknown activation {name!r}; choose one of {', '.join(sorted(_ACT_LAYER_DEFAULT))}"
        ) from err


Init = Literal["default", "xavier", "kaiming", "lecun", "orthogonal"]


def init_weights(net: nn.Module, scheme: str) -> None:
    """Re-initialise every Linear and Conv weight of `net` with torch.nn.init; biases start at 0.

    default keeps torch's own (Kaiming-uniform with a=sqrt(5)). xavier: Glorot uniform, for tanh/sigmoid.
    kaiming: He normal for ReLU (fan_in). lecun: normal with std 1/sqrt(fan_in), the init SELU's
    self-normalisation assumes. orthogonal: Saxe et al.'s orthogonal matrices.
    """
    if scheme == "default":
        return
    for module in net.modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        weight = module.weight
        if scheme == "xavier":
            nn.init.xavier_uniform_(weight)
        elif scheme == "kaiming":
            nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
        elif scheme == "lecun":
            nn.init.kaiming_normal_(
                weight, mode="fan_in", nonlinearity="linear"
            )  # gain 1: std 1/sqrt(fan_in)
        elif scheme == "orthogonal":
            nn.init.orthogonal_(weight)
        else:
            raise ZooError(
                f"--model.init {scheme}: choose one of default, xavier, kaiming, lecun, orthogonal"
            )
        if module.bias is not None:
            nn.init.zeros_(module.bias)
