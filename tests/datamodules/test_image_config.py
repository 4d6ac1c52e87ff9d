"""image_size and channels left unset come from the images, and zoo says so in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules import ImageFolderDataModule
from datamodules.folder import spread_sample
from datamodules.images import infer_image_config
from zoo.errors import ZooError


def write_images(folder: Path, n: int, size: tuple[int, int], mode: str = "RGB", fmt: str = "jpg") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(folder / f"{i:03d}.{fmt}")


def test_bundled_sample_resolves_to_28_px_grayscale_and_says_so_once(capsys):
    dm = ImageFolderDataModule(num_workers=0)
    config = dm.data_config
    assert (config["image_size"], config["channels"], config["mean"], config["std"]) == (28, 1, [0.5], [0.5])
    err = capsys.readouterr().err
    assert err.count("data:") == 1 and "1 channel" in err and "28 px" in err
    assert str(dm.root) in err and "--data.channels / --data.image_size" in err


def test_rgb_photos_resolve_to_three_channels_and_their_shorter_side(tmp_path, capsys):
    for name in ("cat", "dog"):
        write_images(tmp_path / name, 3, (64, 48))
    dm = ImageFolderDataModule(str(tmp_path), num_workers=0)
    assert (dm.image_size, dm.channels, dm.mean) == (48, 3, [0.5] * 3)
    assert capsys.readouterr().err.count("data: 3 channels (RGB), 48 px") == 1
    dm.setup("fit")
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape[1:] == (3, 48, 48)


def test_explicit_values_win_and_nothing_is_printed(capsys):
    dm = ImageFolderDataModule(image_size=16, channels=3, num_workers=0)
    assert (dm.image_size, dm.channels, dm.mean) == (16, 3, [0.5] * 3)
    assert capsys.readouterr().err == ""


def test_only_what_was_left_unset_is_inferred_and_named(capsys):
    dm = ImageFolderDataModule(channels=3, num_workers=0)
    assert (dm.image_size, dm.channels) == (28, 3)
    err = capsys.readouterr().err
    assert "28 px" in err and "--data.image_size" in err and "channel" not in err


@pytest.mark.parametrize(
    ("modes", "channels"),
    [(["L", "I;16", "LA", "1"], 1), (["L", "L", "RGB"], 3), (["P"], 3), (["RGBA"], 3)],
)
def test_one_channel_only_when_every_image_is_grayscale(tmp_path, modes, channels):
    paths = []
    for i, mode in enumerate(modes):
        paths.append(tmp_path / f"{i}.png")
        img = Image.new("L", (20, 12), 100)
        (Image.fromarray(np.full((12, 20), 300, np.uint16)) if mode == "I;16" else img.convert(mode)).save(
            paths[-1]
        )
    assert infer_image_config(paths)[1] == channels


@pytest.mark.parametrize(
    ("sizes", "image_size"),
    [
        ([(28, 28)], 28),
        ([(64, 48), (30, 30), (100, 100)], 48),
        ([(31, 40)], 28),
        ([(5, 9)], 8),
        ([(900, 600)], 128),
    ],
)
def test_size_is_the_median_shorter_side_capped_and_rounded(tmp_path, sizes, image_size):
    paths = []
    for i, size in enumerate(sizes):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", size).save(paths[-1])
    assert infer_image_config(paths)[0] == image_size


def test_unreadable_files_do_not_count(tmp_path):
    Image.new("L", (40, 40)).save(tmp_path / "ok.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    assert infer_image_config([tmp_path / "bad.jpg", tmp_path / "ok.png"]) == (40, 1)


def test_sample_spreads_over_classes_and_within_them():
    files = {c: [Path(f"{c}/{i:04d}.jpg") for i in range(1000)] for c in "abc"}
    picked = spread_sample(files, limit=200)
    assert len(picked) == 198 and {p.parent.name for p in picked} == set("abc")
    assert Path("a/0000.jpg") in picked and max(int(p.stem) for p in picked) > 950
    many = {f"class{c:03d}": [Path(f"class{c:03d}/x.jpg")] * 2 for c in range(500)}
    picked = spread_sample(many, limit=200)
    assert len(picked) <= 200 and max(picked).parent.name > "class450"


def test_rgb_statistics_become_one_value_for_inferred_grayscale():
    dm = ImageFolderDataModule(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], num_workers=0)
    assert dm.channels == 1 and dm.mean == [0.449] and dm.std == [0.226]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": 2}, "must be 1 or 3"),
        ({"image_size": 4}, "at least 8"),
        ({"channels": 1, "mean": [0.5, 0.5, 0.5]}, "needs 1 values"),
        ({"std": [0.5, 0.5]}, "needs 1 values.*set --data.channels"),
    ],
)
def test_explicit_bad_values_still_fail(kwargs, match):
    with pytest.raises(ZooError, match=match):
        ImageFolderDataModule(num_workers=0, **kwargs)
