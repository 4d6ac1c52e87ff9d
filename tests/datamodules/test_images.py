"""Image decoding: every mode a user's folder may hold ends up as the right uint8 array."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datamodules.images import image_nbytes, list_images, load_image, reduced_size


def test_grayscale_and_rgb_conversion(tmp_path):
    Image.fromarray(np.full((5, 7), 200, np.uint8), mode="L").save(tmp_path / "g.png")
    rgb = load_image(tmp_path / "g.png", channels=3)
    gray = load_image(tmp_path / "g.png", channels=1)
    assert rgb.shape == (5, 7, 3) and gray.shape == (5, 7, 1)
    assert (rgb == 200).all() and (gray == 200).all()


def test_sixteen_bit_png_is_rescaled_not_clipped(tmp_path):
    values = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = load_image(tmp_path / "deep.png", channels=1)[0, :, 0]
    # clipping (Pillow's convert("L")) would give [0, 255, 255, 255]
    assert out.tolist() == [0, 64, 128, 255]


def test_rgba_and_transparent_palette_are_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    assert (load_image(tmp_path / "a.png") == 255).all()
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    assert (load_image(tmp_path / "p.png") == 255).all()


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (6, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red in CMYK
    out = load_image(tmp_path / "c.jpg")
    assert out.shape == (6, 6, 3)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (20, 10), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (20, 10, 3)  # (H, W, C) after rotation


def test_reduction_targets_the_shorter_side_and_never_upscales():
    assert reduced_size((4000, 3000), 56) == (74, 56)  # 4000 * 56 / 3000 = 74.7, rounded to even
    assert reduced_size((3000, 4000), 56) == (56, 74)  # portrait: the same rule
    assert reduced_size((100, 100), 56) == (56, 56)
    assert reduced_size((50, 40), 56) == (50, 40) and reduced_size((4000, 3000), None) == (4000, 3000)


def test_non_jpeg_modes_are_shrunk_after_conversion(tmp_path):
    Image.fromarray(np.full((300, 400), 65535, np.uint16)).save(tmp_path / "deep.png")
    Image.new("RGBA", (400, 300), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    deep = load_image(tmp_path / "deep.png", channels=1, min_side=56)
    clear = load_image(tmp_path / "clear.png", channels=3, min_side=56)
    assert deep.shape == (56, 74, 1) and (deep == 255).all()
    assert clear.shape == (56, 74, 3) and (clear == 255).all()  # alpha flattened before resampling
    assert image_nbytes(tmp_path / "deep.png", 1, 56) == deep.nbytes


def test_corrupt_file_raises(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(Exception):  # noqa: B017 - any decoder error is "broken file"
        load_image(tmp_path / "bad.jpg")


def test_list_images_skips_hidden_and_non_images(tmp_path):
    for rel in ["a.png", "sub/b.JPG", ".hidden.png", ".ipynb_checkpoints/c.png", "notes.txt", "._d.png"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a.png", "sub/b.JPG"]
