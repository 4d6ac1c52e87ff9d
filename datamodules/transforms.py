"""Albumentations presets built from a data config (image size, channels).

Every pipeline ends in a uint8 tensor (C, H, W): scaling to [0, 1] and mean/std normalisation
happen inside the model, on its device, so loaders move 4x fewer bytes and a checkpoint or an
export is all that is needed to predict.
"""

from __future__ import annotations

from typing import Literal

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

Augment = Literal["none", "light", "standard"]
AUGMENTS: tuple[str, ...] = ("none", "light", "standard")


def eval_transform(image_size: int) -> A.Compose:
    """Resize the shorter side to `image_size`, then centre-crop a square (timm's crop_pct=1.0)."""
    return A.Compose(
        [A.SmallestMaxSize(max_size=image_size), A.CenterCrop(image_size, image_size), ToTensorV2()]
    )


def train_transform(image_size: int, channels: int, augment: Augment = "light") -> A.Compose:
    """Training pipeline for a preset.

    - ``none``: the eval pipeline.
    - ``light``: pad-and-crop translation + horizontal flip; the classic small-image recipe
      (CIFAR, Fashion-MNIST) that keeps the whole object in view.
    - ``standard``: RandomResizedCrop + flip + colour jitter; the ImageNet fine-tuning recipe.
    """
    if augment == "none":
        return eval_transform(image_size)
    if augment == "light":
        pad = max(2, image_size // 8)
        ops = [
            A.SmallestMaxSize(max_size=image_size),
            A.PadIfNeeded(image_size + pad, image_size + pad, border_mode=cv2.BORDER_CONSTANT, fill=0),
            A.RandomCrop(image_size, image_size),
            A.HorizontalFlip(),
        ]
    elif augment == "standard":
        # Hue and saturation mean nothing for one channel: jitter brightness/contrast only.
        jitter = (
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=0.8)
            if channels == 3
            else A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.8)
        )
        ops = [
            A.RandomResizedCrop(size=(image_size, image_size), scale=(0.35, 1.0)),
            A.HorizontalFlip(),
            jitter,
        ]
    else:
        raise ValueError(f"unknown augment preset {augment!r}; choose one of {', '.join(AUGMENTS)}")
    return A.Compose([*ops, ToTensorV2()])
