"""Full Fashion-MNIST from its IDX files (Debian's `dataset-fashion-mnist`, or torchvision's download)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from datamodules.base import ImageClassificationDataModule, Sampler, Split
from datamodules.transforms import Augment, Interpolation
from zoo.errors import ZooError

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gzipped or not.

    torchvision's reader only opens the unzipped files inside its own FashionMNIST/raw layout;
    Debian ships the .gz files in a read-only folder, so we read the (tiny) format directly.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()  # writable


def _find(root: Path, stem: str) -> Path | None:
    for candidate in (root / stem, root / f"{stem}.gz", root / "FashionMNIST" / "raw" / stem):
        if candidate.exists():
            return candidate
    return None


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of the "train" or "test" IDX files in `root`."""
    paths = [_find(root, stem) for stem in FILES[split]]
    if None in paths:
        raise ZooError(
            f"Fashion-MNIST IDX files not found in {root}; install them with "
            "`apt-get install dataset-fashion-mnist`, pass --data.root DIR, or --data.download true"
        )
    images, labels = (read_idx(p) for p in paths)
    return images, labels.astype(np.int64)


class FashionMNISTDataModule(ImageClassificationDataModule):
    """Fashion-MNIST: 60k train (a stratified `val_fraction` held out for val) and the 10k test set.

    Args:
        root: folder with the four IDX files (.gz or not); default: Debian's dataset-fashion-mnist.
        download: fetch with torchvision into `root` when the files are missing (needs internet).
        val_fraction: share of the 60k training images held out for validation.
        split_seed: seed of that split.
        image_size: side of the square images the model sees; None = 28, the data's own.
        channels: 1 (grayscale) or 3 (the gray repeated); None = 1, the data's own.
        mean: see ImageClassificationDataModule (as are the remaining arguments).
    """

    def __init__(
        self,
        root: str = DEBIAN_DIR,
        download: bool = False,
        val_fraction: float = 0.1,
        split_seed: int = 42,
        image_size: int | None = None,
        channels: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        interpolation: Interpolation | None = None,
        batch_size: int = 256,
        num_workers: int | None = None,
        augment: Augment | str = "light",
        hflip: bool = False,
        cache_gb: float | None = None,
        sampler: Sampler = "shuffle",
    ) -> None:
        super().__init__(
            image_size, channels, mean, std, interpolation, batch_size, num_workers, augment, hflip, cache_gb,
            sampler,
        )  # fmt: skip
        self.root = Path(root).expanduser()
        self.download = download
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self._resolve_image_config(lambda: (28, 1))

    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)

    def prepare_data(self) -> None:
        if self.download and _find(self.root, FILES["train"][0]) is None:
            from torchvision.datasets import FashionMNIST

            for train in (True, False):
                FashionMNIST(str(self.root), train=train, download=True)

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        images, labels = load_split(self.root, split)
        return images[..., None], labels  # (N, 28, 28, 1)

    def _find_splits(self) -> dict[str, Split]:
        images, labels = self._load("train")
        rng = np.random.default_rng(self.split_seed)
        val_idx = np.concatenate(
            [
                rng.permutation(np.flatnonzero(labels == c))[: round((labels == c).sum() * self.val_fraction)]
                for c in range(len(CLASS_NAMES))
            ]
        )
        is_val = np.zeros(len(labels), dtype=bool)
        is_val[val_idx] = True
        test_images, test_labels = self._load("test")
        return {
            "train": self._arrays(images[~is_val], labels[~is_val]),
            "val": self._arrays(images[is_val], labels[is_val]),
            "test": self._arrays(test_images, test_labels),
        }

    def _arrays(self, images: np.ndarray, labels: np.ndarray) -> Split:
        if self.channels == 3:
            images = np.repeat(images, 3, axis=-1)
        return Split(list(images), labels)
