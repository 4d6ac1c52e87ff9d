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
Interpolation = Literal["bilinear", "bicubic", "area", "nearest"]
# timm's names (a pretrained config's `interpolation`) -> OpenCV's flags, which albumentations takes.
INTERPOLATIONS = {
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "nearest": cv2.INTER_NEAREST,
}


def _resize_crop(image_size: int, flag: int) -> list[A.BasicTransform]:
    """Resize the shorter side to `image_size`, then centre-crop a square (timm's crop_pct=1.0)."""
    return [A.SmallestMaxSize(max_size=image_size, interpolation=flag), A.CenterCrop(image_size, image_size)]


def eval_transform(image_size: int, interpolation: Interpolation = "bilinear") -> A.Compose:
    """Resize the shorter side to `image_size`, then centre-crop a square (timm's crop_pct=1.0)."""
    return A.Compose([*_resize_crop(image_size, INTERPOLATIONS[interpolation]), ToTensorV2()])


def train_transform(
    image_size: int,
    channels: int,
    augment: Augment = "light",
    hflip: bool = False,
    interpolation: Interpolation = "bilinear",
) -> A.Compose:
    """Training pipeline for a preset.

    - ``none``: the eval pipeline.
    - ``light``: pad-and-crop translation; the classic small-image recipe (CIFAR, Fashion-MNIST)
      that keeps the whole object in view.
    - ``standard``: RandomResizedCrop + colour jitter; the ImageNet fine-tuning recipe.

    `hflip` adds random horizontal flips (off by default: a flip changes digits, text and
    left/right classes, so a recipe turns it on where the classes are mirror-symmetric).
    """
    flag = INTERPOLATIONS[interpolation]
    if augment == "none":
        ops = _resize_crop(image_size, flag)
    elif augment == "light":
        pad = max(2, image_size // 8)
        ops = [
            A.SmallestMaxSize(max_size=image_size, interpolation=flag),
            A.PadIfNeeded(image_size + pad, image_size + pad, border_mode=cv2.BORDER_CONSTANT, fill=0),
            A.RandomCrop(image_size, image_size),
        ]
    elif augment == "standard":
        # Hue and saturation mean nothing for one channel: jitter brightness/contrast only.
        jitter = (
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=0.8)
            if channels == 3
            else A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.8)
        )
        ops = [
            A.RandomResizedCrop(size=(image_size, image_size), scale=(0.35, 1.0), interpolation=flag),
            jitter,
        ]
    else:
        raise ValueError(f"unknown augment preset {augment!r}; choose one of {', '.join(AUGMENTS)}")
    return A.Compose([*ops, *([A.HorizontalFlip()] if hflip else []), ToTensorV2()])
