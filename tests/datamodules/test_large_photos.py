"""Large photos are decoded once at a size the model can use, not at full resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import datamodules.base
from datamodules import ImageFolderDataModule
from datamodules.images import decode_side, image_nbytes, infer_image_config, list_images, load_image
from datamodules.transforms import eval_transform

SIZE = 28
W, H = 4000, 3000  # twelve megapixels, as a phone takes them


def write_photo(path: Path, seed: int, rotated: bool) -> None:
    """A smooth random 4000x3000 JPEG whose left third is bright; EXIF 6 shows it as a portrait."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 160, (12, 16, 3), dtype=np.uint8)
    small[:, : 16 // 3] = 240  # the left third, where the check for orientation looks
    img = Image.fromarray(small).resize((W, H), Image.Resampling.BILINEAR)
    exif = Image.Exif()
    if rotated:
        exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the left third becomes the top third
    img.save(path, quality=85, exif=exif)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for c, name in enumerate(("beach", "forest")):
        (root / name).mkdir()
        for i in range(2):
            write_photo(root / name / f"IMG_{i}.jpg", seed=10 * c + i, rotated=i == 1)
    return root


def bright_third(image: np.ndarray) -> str:
    """Which third of the image (H, W, C) is the bright one: 'top' or 'left'."""
    h, w = image.shape[:2]
    top = image[: h // 3].mean() - image[h // 2 :].mean()
    left = image[:, : w // 3].mean() - image[:, w // 2 :].mean()
    return "top" if top > left else "left"


def test_photos_are_cached_at_twice_the_model_size_with_orientation_applied(photos):
    dm = ImageFolderDataModule(str(photos), image_size=SIZE, channels=3, num_workers=0, val_fraction=0.5)
    dm.setup("fit")
    cached = [a for s in dm.splits.values() for a in s.items]
    assert len(cached) == 4 and all(isinstance(a, np.ndarray) for a in cached)
    assert sorted(a.shape for a in cached) == [(56, 74, 3)] * 2 + [(74, 56, 3)] * 2  # not (3000, 4000, 3)
    assert sum(a.nbytes for a in cached) <= 4 * 56 * 74 * 3  # 144 MB at full resolution
    for image in cached:
        portrait = image.shape[0] > image.shape[1]
        assert bright_third(image) == ("top" if portrait else "left")


def test_size_estimate_matches_the_reduced_decode(photos):
    for path in list_images(photos):
        for channels in (1, 3):
            assert (
                image_nbytes(path, channels, decode_side(SIZE))
                == load_image(path, channels, decode_side(SIZE)).nbytes
            )
    assert image_nbytes(path, 3) == W * H * 3  # no target: full size, as before


def test_the_model_sees_the_same_picture_as_from_full_resolution(photos):
    """Reduction changes resampling only: the eval crop matches an area-averaged full-size decode."""
    path = photos / "beach" / "IMG_1.jpg"  # the rotated one
    seen = (
        eval_transform(SIZE)(image=load_image(path, 3, decode_side(SIZE)))["image"].permute(1, 2, 0).numpy()
    )
    full = Image.fromarray(load_image(path, 3))  # (4000, 3000) portrait
    reference = np.asarray(full.resize((SIZE, round(SIZE * 4000 / 3000)), Image.Resampling.BOX))
    top = (reference.shape[0] - SIZE) // 2
    reference = reference[top : top + SIZE]  # the centre crop
    assert seen.shape == reference.shape == (SIZE, SIZE, 3)
    # 0.3 levels here; half a pixel of misplaced crop gives ~7, a wrong rotation ~80
    assert np.abs(seen.astype(int) - reference.astype(int)).mean() < 2


def test_streamed_files_are_decoded_at_the_reduced_size_too(photos, monkeypatch):
    sides = []

    def spy(path, channels, min_side=None):
        sides.append(min_side)
        return load_image(path, channels, min_side)

    monkeypatch.setattr(datamodules.base, "load_image", spy)
    dm = ImageFolderDataModule(str(photos), image_size=SIZE, channels=1, num_workers=0, cache_gb=0)
    dm.setup("fit")
    assert all(isinstance(p, Path) for p in dm.splits["train"].items)  # on disk, not cached
    sides.clear()
    images, _ = next(iter(dm.val_dataloader()))
    assert images.shape[1:] == (1, SIZE, SIZE)
    assert sides and set(sides) == {2 * SIZE}


def test_photos_infer_rgb_and_the_size_cap(photos):
    assert infer_image_config(list_images(photos)) == (128, 3)
