"""FashionMNISTDataModule: the IDX reader and, where Debian's files are installed, the real data."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

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


def test_small_synthetic_fashion_mnist_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 50)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    dm = FashionMNISTDataModule(str(tmp_path), num_workers=0, batch_size=16)
    assert (dm.image_size, dm.channels, dm.mean) == (28, 1, [0.5])  # its own size, unannounced
    assert capsys.readouterr().err == ""
    dm.setup("fit")
    assert len(dm.splits["train"].labels) == 180 and len(dm.splits["val"].labels) == 20
    assert np.bincount(dm.splits["val"].labels).tolist() == [2] * 10
    images, labels = next(iter(dm.test_dataloader()))
    assert images.shape == (16, 1, 28, 28)


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
