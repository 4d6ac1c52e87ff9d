"""Albumentations-based LightningDataModules: image folders and Fashion-MNIST.

The classes load on first use (PEP 562), so light modules of the package (layout, images) import without
Lightning: `zoo doctor` starts in a fraction of a second.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# albumentations asks the package index for a newer version on every import (a network call, and a hang where
# there is no network) unless this is set; set here too, for code that uses the data modules without zoo.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

_WHERE = {
    "ImageClassificationDataModule": "datamodules.base",
    "FashionMNISTDataModule": "datamodules.fashion_mnist",
    "ImageFolderDataModule": "datamodules.folder",
    "sample_root": "datamodules.folder",
    "ShardDataModule": "datamodules.shards",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
