"""Albumentations-based LightningDataModules: image folders and Fashion-MNIST.

The classes load on first use (PEP 562), so light modules of the package (layout, images) import without
Lightning: `zoo doctor` starts in a fraction of a second.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ImageClassificationDataModule": "datamodules.base",
    "FashionMNISTDataModule": "datamodules.fashion_mnist",
    "ImageFolderDataModule": "datamodules.folder",
    "sample_root": "datamodules.folder",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
