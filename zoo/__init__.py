"""zoo: train and fine-tune image classifiers on your own image folders."""

import os

# albumentations asks the package index for a newer version on every import (a network call, and a hang where
# there is no network) unless this is set.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from zoo.errors import ZooError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["ZooError", "__version__"]
