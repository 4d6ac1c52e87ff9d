"""FashionMNISTDataModule: the IDX reader and, where Debian's files are installed, the real data."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules import FashionMNISTDataModule
from datamodules.fashion_mnist import DEBIAN_DIR, read_idx
from zoo.errors import ZooError


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip(tmp_path):
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    write_idx(tmp_path / "x-idx3-ubyte.gz", images)
    assert np.array_equal(read_idx(tmp_path / "x-idx3-ubyte.gz"), images)


# Pixels of the first row that name an image of the synthetic files: its label, its file, its index.
LABEL, FILE, INDEX_HIGH, INDEX_LOW = range(4)
FILE_TAGS = {"train": 1, "t10k": 2}


def tagged_images(rng: np.random.Generator, labels: np.ndarray, prefix: str) -> np.ndarray:
    """Random 28 px images whose first pixels say which label, file and index each belongs to."""
    images = rng.integers(0, 255, (len(labels), 28, 28))
    images[:, 0, LABEL] = labels
    images[:, 0, FILE] = FILE_TAGS[prefix]
    images[:, 0, INDEX_HIGH], images[:, 0, INDEX_LOW] = np.divmod(np.arange(len(labels)), 256)
    return images


def decode(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, file tags and indices written by `tagged_images`, from images (N, 28, 28, C)."""
    row = images[:, 0, :, 0].astype(np.int64)
    return row[:, LABEL], row[:, FILE], 256 * row[:, INDEX_HIGH] + row[:, INDEX_LOW]


def test_small_synthetic_fashion_mnist_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 50)):
        labels = rng.permutation(np.arange(n) % 10)  # balanced, in no order a shift would keep
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", tagged_images(rng, labels, prefix))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    dm = FashionMNISTDataModule(str(tmp_path), num_workers=0, batch_size=16)
    assert (dm.image_size, dm.channels, dm.mean) == (28, 1, [0.5])  # its own size, unannounced
    assert capsys.readouterr().err == ""
    dm.setup("fit")
    assert len(dm.splits["train"].labels) == 180 and len(dm.splits["val"].labels) == 20
    assert np.bincount(dm.splits["val"].labels).tolist() == [2] * 10
    decoded = {s: decode(np.stack(dm.splits[s].items)) for s in ("train", "val", "test")}
    for split, (labels, files, _) in decoded.items():
        assert np.array_equal(labels, dm.splits[split].labels), f"{split}: an image lost its own label"
        assert set(files) == {FILE_TAGS["t10k" if split == "test" else "train"]}, f"{split}: the wrong files"
    # train and val share out the 200 training images; the test split is the t10k file, whole and in order
    assert sorted([*decoded["train"][2], *decoded["val"][2]]) == list(range(200))
    assert decoded["test"][2].tolist() == list(range(50))
    # and the loaders serve each image with its own label
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        batches = list(loader)
        images = torch.cat([b[0] for b in batches])  # (N, 1, 28, 28) uint8
        assert images.shape == (len(dm.splits[split].labels), 1, 28, 28)
        labels, files, _ = decode(images.permute(0, 2, 3, 1).numpy())
        assert np.array_equal(labels, torch.cat([b[1] for b in batches]).numpy())
        assert set(files) == {FILE_TAGS["t10k" if split == "test" else "train"]}


def test_missing_files_say_how_to_get_them(tmp_path):
    dm = FashionMNISTDataModule(str(tmp_path), num_workers=0)
    with pytest.raises(ZooError, match="apt-get install dataset-fashion-mnist"):
        dm.setup("fit")


@pytest.mark.skipif(not Path(DEBIAN_DIR).exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_debian():
    dm = FashionMNISTDataModule(num_workers=0)
    dm.setup("fit")
    assert [len(dm.splits[s].labels) for s in ("train", "val", "test")] == [54000, 6000, 10000]
    assert np.bincount(dm.splits["test"].labels).tolist() == [1000] * 10
