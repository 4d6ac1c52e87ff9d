"""zoo: train and fine-tune image classifiers on your own image folders."""

from zoo.errors import ZooError

__version__ = "0.1.0"
__all__ = ["ZooError", "__version__"]
