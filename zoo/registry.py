"""A tiny registry of model families, so a checkpoint names its family as a plain string."""

from __future__ import annotations

from collections.abc import Callable

from zoo.errors import ZooError

FAMILIES: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: `@register("cnn")` makes the class loadable by that name."""

    def wrap(cls: type) -> type:
        cls.family = name
        FAMILIES[name] = cls
        return cls

    return wrap


def get_family(name: str) -> type:
    """The LightningModule class registered as `name`; the error lists the valid names."""
    if name not in FAMILIES:
        raise ZooError(f"unknown model family {name!r}; valid: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]
