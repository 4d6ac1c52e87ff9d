"""A tiny registry of model families, so a checkpoint names its family as a plain string."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from zoo.errors import ZooError

FAMILIES: dict[str, type] = {}
FAMILY_MODULES = ("zoo.scratch", "zoo.finetune")  # where the @register decorators run


def families() -> dict[str, type]:
    """Every registered family by name, importing the modules that register them on first use."""
    for module in FAMILY_MODULES:
        importlib.import_module(module)
    # in FAMILY_MODULES' order (mlp, cnn, timm), whichever module something imported first
    order = {name: i for i, name in enumerate(FAMILY_MODULES)}
    return dict(sorted(FAMILIES.items(), key=lambda item: order.get(item[1].__module__, len(order))))


def register(name: str) -> Callable[[type], type]:
    """Class decorator: `@register("cnn")` makes the class loadable by that name."""

    def wrap(cls: type) -> type:
        cls.family = name
        FAMILIES[name] = cls
        return cls

    return wrap


def get_family(name: str) -> type:
    """The LightningModule class registered as `name`; the error lists the valid names."""
    if name not in families():
        raise ZooError(f"unknown model family {name!r}; valid: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]
