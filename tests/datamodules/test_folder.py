"""ImageFolderDataModule: both layouts, the saved split, broken files and clear errors."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import ImageFolderDataModule, sample_root
from tests.conftest import make_folder, write_class_images
from zoo.errors import ZooError


def attach(dm: ImageFolderDataModule, run_dir: Path) -> ImageFolderDataModule:
    dm.trainer = SimpleNamespace(default_root_dir=str(run_dir), is_global_zero=True)  # what a Trainer gives
    return dm


def test_class_layout_gets_a_stratified_seeded_split_saved_in_the_run_dir(tmp_path, image_folder):
    dm = attach(
        ImageFolderDataModule(str(image_folder), val_fraction=0.2, image_size=16, num_workers=0),
        tmp_path / "run",
    )
    dm.setup("fit")
    assert dm.class_names == ["cat", "dog", "owl"]
    val_labels = dm.splits["val"].labels
    assert np.bincount(val_labels).tolist() == [2, 2, 2]  # 20 % of 10 per class
    assert len(dm.splits["train"].labels) == 24
    train_list = (tmp_path / "run" / "splits" / "train.txt").read_text().splitlines()
    val_list = (tmp_path / "run" / "splits" / "val.txt").read_text().splitlines()
    assert len(train_list) == 24 and len(val_list) == 6
    assert not set(train_list) & set(val_list)
    again = attach(ImageFolderDataModule(str(image_folder), image_size=16, num_workers=0), tmp_path / "run2")
    again.setup("fit")
    assert (
        tmp_path / "run2" / "splits" / "val.txt"
    ).read_text().splitlines() == val_list  # same seed, same split


def test_split_stays_put_when_images_are_added(tmp_path):
    root = make_folder(tmp_path / "grow", n=10)
    dm = ImageFolderDataModule(str(root), image_size=16, num_workers=0, cache_gb=0)
    dm.setup("fit")
    before_val = set(dm.splits["val"].items)
    for c, name in enumerate(dm.class_names):  # one more image per class: val stays at 2 each
        write_class_images(root / name, 1, seed=99 + c)
        (root / name / "img_000.png").rename(root / name / "new_000.png")
        (root / name / "img_000.png").write_bytes((root / name / "new_000.png").read_bytes())
    grown = ImageFolderDataModule(str(root), image_size=16, num_workers=0, cache_gb=0)
    grown.setup("fit")
    assert not set(grown.splits["val"].items) & set(dm.splits["train"].items)  # no training image leaks
    assert len(before_val - set(grown.splits["val"].items)) <= 3  # at most one per class made room


def test_split_layout_accepts_valid_and_test(tmp_path):
    root = make_folder(tmp_path / "d", layout="split")
    (root / "val").rename(root / "valid")
    write_class_images(root / "test" / "cat", 2)
    for name in ("dog", "owl"):
        write_class_images(root / "test" / name, 2)
    dm = ImageFolderDataModule(str(root), image_size=16, num_workers=0)
    dm.setup("fit")
    assert sorted(dm.splits) == ["test", "train", "val"]
    assert len(dm.splits["train"].labels) == 30 and len(dm.splits["val"].labels) == 9
    images, labels = next(iter(dm.test_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 16, 16)


def test_small_data_is_decoded_once_into_ram_and_big_data_is_not(image_folder):
    cached = ImageFolderDataModule(str(image_folder), image_size=16, num_workers=0)
    cached.setup("fit")
    assert isinstance(cached.splits["train"].items[0], np.ndarray)
    streamed = ImageFolderDataModule(str(image_folder), image_size=16, num_workers=0, cache_gb=0)
    streamed.setup("fit")
    assert isinstance(streamed.splits["train"].items[0], Path)
    a, _ = next(iter(cached.val_dataloader()))
    b, _ = next(iter(streamed.val_dataloader()))
    assert torch.equal(a, b)


def test_broken_files_are_listed_skipped_and_strict_fails(tmp_path, image_folder):
    (image_folder / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (image_folder / "dog" / "empty.png").write_bytes(b"")
    dm = attach(ImageFolderDataModule(str(image_folder), image_size=16, num_workers=0), tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup("fit")
    message = " ".join(str(w.message) for w in caught)
    assert "skipping 2 image file(s)" in message and "broken.jpg" in message
    assert len((tmp_path / "run" / "bad_files.txt").read_text().splitlines()) == 2
    total = sum(len(s.labels) for s in dm.splits.values())
    assert total == 30  # the two broken files are left out
    assert isinstance(dm.splits["train"].items[0], np.ndarray)  # the rest is still cached in RAM
    streamed = ImageFolderDataModule(str(image_folder), image_size=16, num_workers=0, cache_gb=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        streamed.setup("fit")
    for split in streamed.splits.values():  # labels still belong to their files after the removal
        assert all(
            p.parent.name == streamed.class_names[y] for p, y in zip(split.items, split.labels, strict=True)
        )
    strict = ImageFolderDataModule(str(image_folder), image_size=16, num_workers=0, strict=True)
    with pytest.raises(ZooError, match="cannot be decoded"):
        strict.setup("fit")


def test_odd_modes_in_one_folder_all_load(tmp_path):
    root = tmp_path / "modes"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        Image.new("RGBA", (12, 9), (255, 0, 0, 128)).save(root / name / "rgba.png")
        Image.new("P", (12, 9)).save(root / name / "pal.png")
        Image.new("CMYK", (12, 9)).save(root / name / "cmyk.jpg")
        Image.fromarray(np.full((9, 12), 40000, np.uint16)).save(root / name / "deep.png")
        Image.new("L", (12, 9)).save(root / name / "gray.bmp")
    dm = ImageFolderDataModule(str(root), image_size=8, channels=3, num_workers=0, val_fraction=0.4)
    dm.setup("fit")
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape[1:] == (3, 8, 8)


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "no class sub-folders"),
        (lambda root: (root / "a").mkdir(parents=True) or (root / "b").mkdir(), "has no images"),
        (lambda root: root.parent.mkdir(exist_ok=True) or root.write_text("x"), "is a file"),
    ],
)
def test_bad_folders_give_one_line_errors_naming_the_path(tmp_path, setup, match):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(ZooError, match=match) as err:
        ImageFolderDataModule(str(root))
    assert str(root) in str(err.value) and "\n" not in str(err.value)


def test_bundled_sample_is_complete():
    root = sample_root()
    dm = ImageFolderDataModule(None, image_size=28, channels=1, num_workers=0)
    assert dm.root == root and len(dm.class_names) == 10
    assert (root / "LICENSE.txt").read_text().count("MIT") >= 1
    dm.setup("fit")
    assert len(dm.splits["train"].labels) == 1000 and len(dm.splits["val"].labels) == 200
