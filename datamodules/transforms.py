"""Albumentations presets built from a data config (image size, channels), and users' pipeline files.

Every pipeline ends in a uint8 tensor (C, H, W): scaling to [0, 1] and mean/std normalisation
happen inside the model, on its device, so loaders move 4x fewer bytes and a checkpoint or an
export is all that is needed to predict.
"""

from __future__ import annotations

import difflib
import inspect
import json
from pathlib import Path
from typing import Literal

import albumentations as A
import cv2
import numpy as np
import torch
import yaml
from albumentations.pytorch import ToTensorV2

from datamodules.images import decode_side
from zoo.errors import ZooError

Augment = Literal["none", "light", "standard"]
AUGMENTS: tuple[str, ...] = ("none", "light", "standard")
# albumentations' own serialisation (A.save / A.load), by file suffix.
PIPELINE_FORMATS = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
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
    return _resize_crop_only(
        A.Compose([*_resize_crop(image_size, INTERPOLATIONS[interpolation]), ToTensorV2()]), image_size
    )


def _resize_crop_only(pipeline: A.Compose, image_size: int) -> A.Compose:
    pipeline.zoo_unchanged_at = image_size  # see to_tensor
    return pipeline


def to_tensor(pipeline: A.Compose, image: np.ndarray) -> torch.Tensor:
    """Run a pipeline on a uint8 (H, W, C) image -> uint8 (C, H, W) tensor.

    The eval pipeline (and `--data.augment none` without flips) leaves an image that is already an
    image_size square as it is, so such an image skips it: albumentations takes ~35 us a call, which on
    28 px images was most of a loader worker's work, and on a 2-core machine that work slows the training
    step it runs beside (benchmarks/loop_overhead.py).
    """
    side = getattr(pipeline, "zoo_unchanged_at", None)
    if side is not None and image.shape[0] == image.shape[1] == side:
        return torch.from_numpy(image.transpose(2, 0, 1))  # as ToTensorV2 does
    return pipeline(image=image)["image"]


def train_transform(
    image_size: int,
    channels: int,
    augment: Augment | str = "light",
    hflip: bool = False,
    interpolation: Interpolation = "bilinear",
) -> A.Compose:
    """Training pipeline for a preset or a pipeline file.

    - ``none``: the eval pipeline.
    - ``light``: pad-and-crop translation; the classic small-image recipe (CIFAR, Fashion-MNIST)
      that keeps the whole object in view.
    - ``standard``: RandomResizedCrop + colour jitter; the ImageNet fine-tuning recipe.
    - a path to an albumentations pipeline file (see `load_pipeline`): its transforms, then the
      eval pipeline's resize and centre crop, so any size it leaves ends as image_size squares.

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
        ops = [*load_pipeline(augment), *_resize_crop(image_size, flag)]
    pipeline = A.Compose([*ops, *([A.HorizontalFlip()] if hflip else []), ToTensorV2()])
    return _resize_crop_only(pipeline, image_size) if augment == "none" and not hflip else pipeline


def save_preset(
    name: Augment,
    path: str | Path,
    image_size: int,
    channels: int = 3,
    interpolation: Interpolation = "bilinear",
) -> Path:
    """Write a preset's augmentations as a pipeline file to start your own from.

    Args:
        name: the preset: none, light or standard.
        path: the file to write; its suffix (.yaml, .yml or .json) picks the format.
        image_size: the side the preset crops to (written into the file).
        channels: 1 or 3; the standard preset's colour jitter depends on it.
        interpolation: the resize interpolation written into the file.

    Returns:
        the path written.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() not in PIPELINE_FORMATS:
        raise ZooError(f"{path}: a pipeline file ends in {', '.join(PIPELINE_FORMATS)}")
    if name not in AUGMENTS:
        raise ZooError(f"unknown augment preset {name!r}; choose one of {', '.join(AUGMENTS)}")
    ops = train_transform(image_size, channels, name, interpolation=interpolation).transforms[:-1]
    data = A.to_dict(A.Compose(ops))
    for op, entry in zip(ops, data["transform"]["transforms"], strict=True):
        # albumentations 2.0.8 also writes internal attributes (PadIfNeeded's `padding`), then warns
        # of them on load: keep only what the constructor takes.
        takes = inspect.signature(type(op).__init__).parameters
        for key in [k for k in entry if k not in takes and k != "__class_fullname__"]:
            del entry[key]
    with path.open("w") as f:
        if PIPELINE_FORMATS[path.suffix.lower()] == "json":
            json.dump(data, f, indent=2)
        else:
            yaml.safe_dump(data, f, sort_keys=False)
    return path


def load_pipeline(augment: str | Path) -> list[A.BasicTransform]:
    """The transforms of a pipeline file written by `A.save` (YAML or JSON), or by `save_preset`.

    The file holds only the random augmentations: zoo appends the resize to image_size and the tensor
    conversion, and the model scales and normalises, so ToTensorV2 is refused.

    Raises:
        ZooError: one line naming the file and the fix (no such file, not YAML/JSON, not a pipeline).
    """
    path = Path(augment).expanduser()
    where = f"--data.augment {augment}"
    if not path.is_file():
        close = difflib.get_close_matches(str(augment), AUGMENTS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ZooError(
            f"{where}: choose one of {', '.join(AUGMENTS)}, or give an albumentations pipeline file "
            f"({', '.join(PIPELINE_FORMATS)}); no file {path} exists{hint}"
        )
    data_format = PIPELINE_FORMATS.get(path.suffix.lower())
    if data_format is None:
        raise ZooError(f"{where}: a pipeline file ends in {', '.join(PIPELINE_FORMATS)}, as A.save writes it")
    try:
        text = path.read_text()
        data = json.loads(text) if data_format == "json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        raise ZooError(f"{where}: cannot read it as {data_format.upper()}: {_syntax_error(err)}") from err
    if not isinstance(data, dict) or not isinstance(data.get("transform"), dict):
        raise ZooError(
            f"{where}: not an albumentations pipeline (no `transform:` mapping); write one with "
            "A.save(A.Compose([...]), path) or datamodules.transforms.save_preset"
        )
    try:
        pipeline = A.from_dict(data)
    except KeyError as err:  # albumentations' registry lookup of an unknown `__class_fullname__`
        raise ZooError(
            f"{where}: unknown albumentations transform {err}; check its name in the file"
        ) from err
    except Exception as err:  # albumentations checks each transform's arguments with pydantic
        raise ZooError(f"{where}: not a valid albumentations pipeline: {_one_line(err)}") from err
    # A top-level Compose is unwrapped (so a saved preset replays the preset's draws), unless its p < 1.
    ops = list(pipeline.transforms) if isinstance(pipeline, A.Compose) and pipeline.p == 1 else [pipeline]
    if any(isinstance(op, ToTensorV2) for op in _flatten(ops)):
        raise ZooError(
            f"{where}: remove ToTensorV2 from the file; zoo resizes to --data.image_size and converts "
            "to a tensor after your transforms"
        )
    return ops


def check_pipeline(augment: str, image_size: int, channels: int, interpolation: Interpolation) -> None:
    """Run a pipeline file once on a random image, so a wrong file fails before training starts.

    Raises:
        ZooError: the pipeline crashes, or does not give (channels, image_size, image_size) uint8 tensors
            (a Normalize or ToFloat: the model scales and normalises by itself).
    """
    transform = train_transform(image_size, channels, augment, interpolation=interpolation)
    transform.set_random_seed(0)
    side = decode_side(image_size)  # the shorter side loaders decode images at
    image = np.random.default_rng(0).integers(0, 256, (side, side * 4 // 3, channels), dtype=np.uint8)
    where = f"--data.augment {augment}"
    try:
        out = transform(image=image)["image"]
    except Exception as err:
        raise ZooError(
            f"{where}: the pipeline fails on a {side}x{side * 4 // 3} {channels}-channel uint8 image: "
            f"{type(err).__name__}: {_one_line(err)}"
        ) from err
    want = (channels, image_size, image_size)
    if tuple(out.shape) != want or out.dtype != torch.uint8:
        raise ZooError(
            f"{where}: the pipeline gives {str(out.dtype).removeprefix('torch.')} images of shape "
            f"{tuple(out.shape)}, zoo needs uint8 {want}; remove Normalize/ToFloat (the model "
            "normalises with --data.mean/std) and keep the channel count (or set --data.channels)"
        )


def _flatten(ops: list) -> list:
    """Every transform, inside OneOf/SomeOf/Sequential too."""
    return [leaf for op in ops for leaf in (_flatten(op.transforms) if hasattr(op, "transforms") else [op])]


def _syntax_error(err: Exception) -> str:
    """yaml's errors quote the text around the mistake over several lines: keep what and where."""
    mark = getattr(err, "problem_mark", None)
    if isinstance(err, yaml.MarkedYAMLError) and mark is not None:
        return f"{err.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return _one_line(err)


def _one_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return "; ".join(ln for ln in lines if not ln.startswith("For further information"))
