"""Reading images from disk the way a user expects, whatever mode they were saved in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Same set as torchvision's ImageFolder, so a folder that works there works here.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# Pillow modes that hold more than 8 bits a channel, with the value that maps to white.
_HIGH_BIT_MAX = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535}
# Pillow modes with no colour: a folder of only these is trained with one channel.
GRAY_MODES = frozenset({"1", "L", "LA", "I", "F", *_HIGH_BIT_MAX})
# Inferred image sizes stop here: a from-scratch net on a CPU; pass --data.image_size for more.
MAX_INFERRED_SIZE = 128


class ImageTooLarge(ValueError):
    """An image with more pixels than Pillow decodes by default (`Image.MAX_IMAGE_PIXELS`, its guard
    against decompression bombs), refused from its header before a single pixel is decoded."""

    def __init__(self, size: tuple[int, int] | None) -> None:
        limit = Image.MAX_IMAGE_PIXELS / 1e6
        # size None: Pillow refused the header itself (over twice its limit) and gives no width and height
        what = (
            f"{size[0]}×{size[1]} = {size[0] * size[1] / 1e6:.0f} MP, over the {limit:.0f} MP limit"
            if size
            else f"over {2 * limit:.0f} MP, twice the {limit:.0f} MP limit"
        )
        super().__init__(f"image is {what} (a decompression bomb?): refused before decoding")


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


def decode_side(image_size: int) -> int:
    """Shorter side an image is decoded at for a model that sees `image_size` px squares.

    Twice the model's side: RandomResizedCrop's smallest crop (35% of the area, aspect 3:4) still spans
    more than `image_size` px, so no pipeline upscales, and the final resize is at most ~2x.
    """
    return 2 * image_size


def reduced_size(size: tuple[int, int], min_side: int | None) -> tuple[int, int]:
    """(W, H) scaled so the shorter side is `min_side` when it is longer; never upscaled.

    The longer side is rounded to an even number: the model's resize halves it (from
    `decode_side(image_size)`) and so lands on the pixel count that resizing the original gives,
    and the centre crop on the same pixels.
    """
    short, long = min(size), max(size)
    if min_side is None or short <= min_side:
        return size
    half_scale = (min_side / 2) / short  # the model's own scale when min_side = decode_side(image_size)
    long = max(min_side, 2 * round(long * half_scale))
    return (min_side, long) if size[0] == short else (long, min_side)


def load_image(path: str | Path, channels: int = 3, min_side: int | None = None) -> np.ndarray:
    """Decode an image file to a uint8 array of shape (H, W, channels).

    EXIF orientation is applied; palette, RGBA, CMYK, grayscale and 16-bit images are converted.

    Args:
        path: the image file.
        channels: 1 (grayscale) or 3 (RGB).
        min_side: shrink (keeping the aspect ratio) so the shorter side is this long, when it is
            longer; None = full resolution. JPEGs are decoded at 1/2, 1/4 or 1/8 scale on the way,
            so a 12-megapixel photo never exists in memory at full size.

    Raises:
        ImageTooLarge: over Pillow's pixel limit (a decompression bomb?), refused from the header.
        OSError/ValueError: when the file cannot be decoded (callers decide what to do).
    """
    # An explicit check, not warnings.simplefilter("error", DecompressionBombWarning): warning filters
    # are process-wide, so that switch is not thread-safe in the app, which decodes on several threads.
    try:
        opened = Image.open(path)  # reads the header only
    except Image.DecompressionBombError as err:  # Pillow's own refusal, over twice MAX_IMAGE_PIXELS
        raise ImageTooLarge(None) from err
    with opened as img:
        if Image.MAX_IMAGE_PIXELS and img.width * img.height > Image.MAX_IMAGE_PIXELS:
            raise ImageTooLarge(img.size)
        if min_side is not None:
            img.draft(None, (min_side, min_side))  # JPEG only: keeps both sides >= min_side
        img.load()
        return to_array(img, channels, min_side)


def to_array(img: Image.Image, channels: int = 3, min_side: int | None = None) -> np.ndarray:
    """An opened PIL image as uint8 (H, W, channels): EXIF orientation, 16-bit, alpha, modes handled.

    `min_side` shrinks it as in `load_image`.
    """
    img = ImageOps.exif_transpose(img)
    img = _flatten_alpha(_to_8bit(img))
    img = img.convert("L" if channels == 1 else "RGB")
    target = reduced_size(img.size, min_side)
    if target != img.size:
        # Resized in 8-bit L/RGB, after alpha is flattened, so every source mode gets the same filter.
        img = img.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    arr = np.array(img, dtype=np.uint8)  # a writable copy (np.asarray of a PIL image is read-only)
    return arr[:, :, None] if channels == 1 else arr  # (H, W, C)


def image_nbytes(path: str | Path, channels: int, min_side: int | None = None) -> int:
    """Size in bytes of `load_image(path, channels, min_side)`, read from the header only."""
    with Image.open(path) as img:
        if min_side is not None:
            img.draft(None, (min_side, min_side))  # only sets the size the decoder will give
        width, height = reduced_size(img.size, min_side)
    return width * height * channels


def infer_image_config(paths: list[Path]) -> tuple[int, int]:
    """(image_size, channels) that a sample of images suggests, from their headers only (no decoding).

    - channels: 1 when every readable image is grayscale (Pillow modes 1, L, LA, I, I;16*, F), else 3.
    - image_size: the median shorter side, capped at MAX_INFERRED_SIZE, rounded down to a multiple
      of 4, at least 8 (28x28 digits give 28; 64x48 photos 48; 12-megapixel photos 128).

    Unreadable files are left to the decode pass to report; if none is readable: (MAX_INFERRED_SIZE, 3).
    """
    modes, short_sides = [], []
    for path in paths:
        try:
            with Image.open(path) as img:
                modes.append(img.mode)
                short_sides.append(min(img.size))
        except Exception:  # a broken file is reported when the data set is decoded
            continue
    if not modes:
        return MAX_INFERRED_SIZE, 3
    channels = 1 if all(mode in GRAY_MODES for mode in modes) else 3
    median = int(np.median(short_sides))
    return max(8, min(MAX_INFERRED_SIZE, median) // 4 * 4), channels
