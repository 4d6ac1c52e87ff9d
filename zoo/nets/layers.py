"""Small helpers shared by zoo's nets."""

from __future__ import annotations

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
