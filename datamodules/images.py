"""Reading images from disk the way a user expects, whatever mode they were saved in."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Same set as torchvision's ImageFolder, so a folder that works there works here.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# Pillow modes that hold more than 8 bits a channel, with the value that maps to white.
_HIGH_BIT_MAX = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535}


def is_image_file(path: Path) -> bool:
    """True for a visible file with an image extension (hidden files such as ._x.jpg are skipped)."""
    return path.suffix.lower() in IMG_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """All image files under `folder`, recursively, sorted, skipping hidden files and folders."""
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and is_image_file(path):
            found.append(path)
    return sorted(found)


def _to_8bit(img: Image.Image) -> Image.Image:
    """Rescale 16/32-bit single-channel images to 8 bits (Pillow's convert('L') would clip them)."""
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return Image.fromarray((arr * 255 + 0.5).astype(np.uint8), mode="L")
    top = _HIGH_BIT_MAX.get(img.mode)
    if top is None:
        return img
    arr = np.asarray(img).astype(np.float64)
    if img.mode == "I" and arr.max() > top:  # genuine 32-bit data: use its own range
        top = float(arr.max())
    arr = np.clip(arr * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, mode="L")


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite transparent images on white, as a viewer shows them, instead of dropping alpha."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img


def load_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Decode an image file to a uint8 array of shape (H, W, channels).

    EXIF orientation is applied; palette, RGBA, CMYK, grayscale and 16-bit images are converted.

    Raises:
        OSError/ValueError: when the file cannot be decoded (callers decide what to do).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            img.load()
            return to_array(img, channels)


def to_array(img: Image.Image, channels: int = 3) -> np.ndarray:
    """An opened PIL image as uint8 (H, W, channels): EXIF orientation, 16-bit, alpha, modes handled."""
    img = ImageOps.exif_transpose(img)
    img = _flatten_alpha(_to_8bit(img))
    img = img.convert("L" if channels == 1 else "RGB")
    arr = np.array(img, dtype=np.uint8)  # a writable copy (np.asarray of a PIL image is read-only)
    return arr[:, :, None] if channels == 1 else arr  # (H, W, C)


def image_nbytes(path: str | Path, channels: int) -> int:
    """Decoded size in bytes, read from the header only."""
    with Image.open(path) as img:
        width, height = img.size
    return width * height * channels
