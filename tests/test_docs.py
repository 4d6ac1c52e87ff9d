"""README's configuration reference lists every model and data key a user can set."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import datamodules
from zoo.classifier import ImageClassifier
from zoo.registry import families

README = Path(__file__).resolve().parents[1] / "README.md"


def documented(section: str) -> set[str]:
    """Keys named in the first cell of the reference table's `section.*` rows."""
    keys: set[str] = set()
    for line in README.read_text().splitlines():
        if line.startswith(f"| `{section}."):
            first_cell = line.split("|")[1]
            keys |= {k.removeprefix(f"{section}.") for k in re.findall(r"`([^`]+)`", first_cell)}
    return keys


def arguments(cls: type) -> set[str]:
    return {n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "kwargs")}


@pytest.mark.parametrize("cls", [ImageClassifier, *families().values()], ids=lambda c: c.__name__)
def test_every_model_key_is_in_the_reference(cls):
    assert arguments(cls) <= documented("model"), sorted(arguments(cls) - documented("model"))


@pytest.mark.parametrize(
    "cls", [datamodules.ImageFolderDataModule, datamodules.FashionMNISTDataModule], ids=lambda c: c.__name__
)
def test_every_data_key_is_in_the_reference(cls):
    assert arguments(cls) <= documented("data"), sorted(arguments(cls) - documented("data"))
