"""Image folders: `ROOT/<class>/*` (zoo splits it) or `ROOT/{train,val[,test]}/<class>/*`."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from rich.markup import escape

from datamodules.base import ImageClassificationDataModule, Sampler, Split
from datamodules.images import (
    IMG_EXTENSIONS,
    decode_side,
    infer_image_config,
    list_images,
    load_image,
)
from datamodules.layout import check_not_nested_splits, class_dirs, detect_layout
from datamodules.transforms import Augment, Interpolation
from zoo.console import info
from zoo.errors import ZooError

SAMPLE_NAME = "fashion_mnist_small"
# Images whose headers decide an inferred image_size / channels.
INFER_SAMPLE = 200


def sample_root() -> Path:
    """The bundled sample: a small image-folder cut of Fashion-MNIST shipped inside the package."""
    return Path(str(resources.files("datamodules") / "samples" / SAMPLE_NAME))


def _scan_classes(
    folder: Path, class_names: list[str] | None = None
) -> tuple[list[str], dict[str, list[Path]]]:
    """Class sub-folders of `folder` and their images; errors name the empty or missing path."""
    dirs = class_dirs(folder)
    if not dirs:
        raise ZooError(
            f"no class sub-folders in {folder}; expected {folder}/<class_name>/<images> "
            f"(or {folder}/train/<class_name>/... and {folder}/val/<class_name>/...)"
        )
    names = [d.name for d in dirs]
    if class_names is not None and names != class_names:
        extra = sorted(set(names) - set(class_names))
        missing = sorted(set(class_names) - set(names))
        raise ZooError(
            f"classes in {folder} differ from the training classes (extra: {extra}, missing: {missing}); "
            "every split needs the same class sub-folders"
        )
    files = {}
    for d in dirs:
        files[d.name] = list_images(d)
        if not files[d.name]:
            raise ZooError(
                f"class folder {d} has no images ({', '.join(IMG_EXTENSIONS)}); add images or remove the folder"
            )
    return names, files


def _as_split(files: dict[str, list[Path]], class_names: list[str]) -> Split:
    items, labels = [], []
    for idx, name in enumerate(class_names):
        items += files[name]
        labels += [idx] * len(files[name])
    return Split(items, np.asarray(labels, dtype=np.int64))


def spread_sample(files: dict[str, list[Path]], limit: int = INFER_SAMPLE) -> list[Path]:
    """Up to `limit` files, each class an equal share, evenly spaced within the class."""
    per_class = max(1, limit // len(files))
    picked = []
    for paths in files.values():
        n = min(per_class, len(paths))
        picked += [paths[i * len(paths) // n] for i in range(n)]
    return picked[:: -(-len(picked) // limit)]  # more classes than `limit`: every k-th class


def _rank_key(path: Path, root: Path, seed: int) -> str:
    return hashlib.sha1(f"{seed}/{path.relative_to(root).as_posix()}".encode()).hexdigest()


def stratified_split(
    files: dict[str, list[Path]], class_names: list[str], val_fraction: float, seed: int, root: Path
) -> tuple[Split, Split]:
    """Each class gives its round(n * val_fraction) (>= 1) images with the lowest seeded hash to val.

    Ordering by a hash of the path, not by a shuffle of the list, keeps the split stable when images
    are added: an image never moves from val to train, and from train to val only when the class's
    val count grows by one.
    """
    train: dict[str, list[Path]] = {}
    val: dict[str, list[Path]] = {}
    for name in class_names:
        paths = files[name]
        if len(paths) < 2:
            raise ZooError(
                f"class {name!r} has only {len(paths)} image; a train/val split needs at least 2 per class"
            )
        order = sorted(paths, key=lambda p: _rank_key(p, root, seed))
        n_val = min(len(paths) - 1, max(1, round(len(paths) * val_fraction)))
        val[name] = sorted(order[:n_val])
        train[name] = sorted(order[n_val:])
    return _as_split(train, class_names), _as_split(val, class_names)


class ImageFolderDataModule(ImageClassificationDataModule):
    """Your own images, one sub-folder per class; class names are the sorted sub-folder names.

    Args:
        root: the image folder; None = the bundled Fashion-MNIST sample.
        val_fraction: share of each class held out for validation when ROOT has no val/ folder.
        split_seed: seed of that split (kept apart from the training seed so the split is stable).
        strict: fail on files that cannot be decoded instead of skipping them with a warning.
        mean: per-channel mean of [0, 1] pixels; "auto" = measured on up to 200 training images (for nets
            trained from scratch); None = 0.5 each, or a pretrained backbone's own under `zoo fit`.
        std: as `mean`.
        image_size: side of the square images the model sees; None = from the images: the median
            shorter side of up to 200 training images (read from their headers), capped at 128 and
            rounded down to a multiple of 4 (28 for the bundled sample).
        channels: 1 (grayscale) or 3 (RGB); None = from the images: 1 when all of those images are
            grayscale, else 3. zoo prints the values it inferred.
        interpolation: see ImageClassificationDataModule (as are the remaining arguments).
    """

    def __init__(
        self,
        root: str | None = None,
        val_fraction: float = 0.2,
        split_seed: int = 42,
        strict: bool = False,
        image_size: int | None = None,
        channels: int | None = None,
        mean: list[float] | Literal["auto"] | None = None,
        std: list[float] | Literal["auto"] | None = None,
        interpolation: Interpolation | None = None,
        batch_size: int = 64,
        num_workers: int | None = None,
        augment: Augment | str = "light",
        hflip: bool = False,
        cache_gb: float | None = None,
        sampler: Sampler = "shuffle",
    ) -> None:
        auto = [name for name, value in (("mean", mean), ("std", std)) if value == "auto"]
        super().__init__(
            image_size, channels, None if mean == "auto" else mean, None if std == "auto" else std,
            interpolation, batch_size, num_workers, augment, hflip, cache_gb, sampler,
        )  # fmt: skip
        if not 0.0 < val_fraction < 1.0:
            raise ZooError(f"--data.val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
        self.root = Path(root).expanduser() if root is not None else sample_root()
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.strict = strict
        if not self.root.exists():
            raise ZooError(
                f"data folder {self.root} does not exist; pass --data.root PATH to your image folder"
            )
        if not self.root.is_dir():
            raise ZooError(
                f"--data.root {self.root} is a file; pass the folder that holds the class sub-folders"
            )
        self.layout = self._detect_layout()
        names, files = _scan_classes(self.layout["train"])
        check_not_nested_splits(self.layout["train"], names)
        self._class_names = names
        filled = self._resolve_image_config(lambda: infer_image_config(spread_sample(files)))
        if filled:
            said = {"channels": "1 channel (grayscale)" if self.channels == 1 else "3 channels (RGB)"}
            said["image_size"] = f"{self.image_size} px"
            flags = " / ".join(f"--data.{name}" for name in filled)
            info(
                f"data: {', '.join(said[n] for n in filled)}, from the images in {escape(str(self.root))} "
                f"(set {flags} to change)"
            )
        if auto:
            self._statistics_from_training_images(auto)

    def _statistics_from_training_images(self, names: list[str]) -> None:
        """--data.mean/std auto: per-channel mean and std of [0, 1] pixels of up to 200 training images.

        For nets trained from scratch; a pretrained backbone wants its own statistics (null).
        """
        train = self._find_splits()["train"]
        by_class: dict[str, list[Path]] = {}
        for path, label in zip(train.items, train.labels, strict=True):
            by_class.setdefault(str(label), []).append(path)
        total = np.zeros(self.channels)
        squares = np.zeros(self.channels)
        count = 0
        for path in spread_sample(by_class):
            pixels = (
                load_image(path, self.channels, decode_side(self.image_size)).reshape(-1, self.channels)
                / 255.0
            )
            total += pixels.sum(0)
            squares += (pixels**2).sum(0)
            count += len(pixels)
        mean = total / count
        # A channel that never varies (a constant border colour, say) would be divided by ~0: floor the std.
        std = np.maximum(np.sqrt(np.maximum(squares / count - mean**2, 0.0)), 0.01)
        stats = {"mean": [round(float(v), 4) for v in mean], "std": [round(float(v), 4) for v in std]}
        for name in names:
            setattr(self, name, stats[name])
        said = ", ".join(f"{name} {stats[name]}" for name in names)
        info(f"data: {said}, from {min(len(train.items), INFER_SAMPLE)} training images")

    def _detect_layout(self) -> dict[str, Path]:
        return detect_layout(self.root)

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    def _find_splits(self) -> dict[str, Split]:
        names, train_files = _scan_classes(self.layout["train"])
        splits = {}
        if "val" in self.layout:
            splits["train"] = _as_split(train_files, names)
            splits["val"] = _as_split(_scan_classes(self.layout["val"], names)[1], names)
        else:
            splits["train"], splits["val"] = stratified_split(
                train_files, names, self.val_fraction, self.split_seed, self.layout["train"]
            )
            self._save_split_lists(splits, names)
        if "test" in self.layout:
            splits["test"] = _as_split(_scan_classes(self.layout["test"], names)[1], names)
        return splits

    def _save_split_lists(self, splits: dict[str, Split], names: list[str]) -> None:
        """Write the split zoo made (path<TAB>class per line) so a run can be audited or repeated."""
        if self.run_dir is None:
            return
        out = self.run_dir / "splits"
        out.mkdir(parents=True, exist_ok=True)
        for split_name, split in splits.items():
            lines = [
                f"{p.relative_to(self.root)}\t{names[y]}"
                for p, y in zip(split.items, split.labels, strict=True)
            ]
            (out / f"{split_name}.txt").write_text("\n".join(lines) + "\n")

    def _missing_split_hint(self, split: str) -> str:
        if (
            "val" not in self.layout
        ):  # ROOT/<class>/*: zoo made the train/val split, there is no place for test
            return (
                f"{self.root} holds <class>/ folders, which zoo splits into train and val; for a test set lay it "
                "out as train/<class>/, val/<class>/ and test/<class>/, or run `zoo validate` instead"
            )
        return f"add {self.root}/test/<class_name>/... next to train/ and val/, or run `zoo validate` instead"
