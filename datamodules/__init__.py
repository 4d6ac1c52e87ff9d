"""Albumentations-based LightningDataModules: image folders and Fashion-MNIST."""

from datamodules.base import ImageClassificationDataModule
from datamodules.fashion_mnist import FashionMNISTDataModule
from datamodules.folder import ImageFolderDataModule, sample_root

__all__ = ["FashionMNISTDataModule", "ImageClassificationDataModule", "ImageFolderDataModule", "sample_root"]
