"""Plain nn.Modules; the LightningModules in zoo.classifier wrap them."""

from zoo.nets.cnn import CNN
from zoo.nets.mlp import MLP

__all__ = ["CNN", "MLP"]
