"""The eval pipeline skipped for images already at size gives what the pipeline gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.transforms import INTERPOLATIONS, eval_transform, to_tensor, train_transform


@pytest.mark.parametrize("interpolation", sorted(INTERPOLATIONS))
@pytest.mark.parametrize("channels", [1, 3])
def test_an_image_at_size_skips_the_resize_and_crop_with_the_same_result(interpolation, channels):
    rng = np.random.default_rng(0)
    at_size = rng.integers(0, 256, (28, 28, channels), dtype=np.uint8)
    larger = rng.integers(0, 256, (40, 35, channels), dtype=np.uint8)
    for pipeline in (
        eval_transform(28, interpolation),
        train_transform(28, channels, "none", False, interpolation),
    ):
        for image in (at_size, larger):
            out = to_tensor(pipeline, image)
            assert out.dtype == torch.uint8 and out.shape == (channels, 28, 28)
            assert torch.equal(out, pipeline(image=image)["image"])


def test_pipelines_that_change_an_image_at_size_are_always_run():
    image = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28, 1)
    flips = train_transform(28, 1, "none", hflip=True)
    flips.set_random_seed(0)
    outs = {to_tensor(flips, image)[0, 0, 0].item() for _ in range(20)}
    assert outs == {image[0, 0, 0], image[0, -1, 0]}  # flipped some of the time
    for augment in ("light", "standard"):
        assert getattr(train_transform(28, 1, augment), "zoo_unchanged_at", None) is None


def _types(pipeline) -> list[str]:
    return [type(t).__name__ for t in pipeline.transforms]


def test_each_preset_is_the_augmentation_its_docs_name():
    """light: pad-and-crop translation; standard: RandomResizedCrop + colour jitter (brightness/contrast for
    grayscale); none: the eval resize and crop; hflip adds a flip before the tensor."""
    light = train_transform(28, 3, "light")
    assert _types(light) == ["SmallestMaxSize", "PadIfNeeded", "RandomCrop", "ToTensorV2"]
    assert (light.transforms[1].min_height, light.transforms[2].height) == (28 + 3, 28)  # pad 28 // 8 = 3
    standard = train_transform(28, 3, "standard")
    assert _types(standard) == ["RandomResizedCrop", "ColorJitter", "ToTensorV2"]
    crop, jitter = standard.transforms[:2]
    assert tuple(crop.size) == (28, 28) and tuple(crop.scale) == (0.35, 1.0) and jitter.p == 0.8
    gray = train_transform(28, 1, "standard")
    assert _types(gray) == ["RandomResizedCrop", "RandomBrightnessContrast", "ToTensorV2"]
    assert _types(train_transform(28, 3, "none")) == _types(eval_transform(28))  # no flip, no jitter
    for augment in ("none", "light", "standard"):
        assert _types(train_transform(28, 3, augment, hflip=True))[-2:] == ["HorizontalFlip", "ToTensorV2"]
    # what they do: light shifts the image (a black border comes in), standard changes its colours
    image = np.full((28, 28, 3), 200, dtype=np.uint8)
    light.set_random_seed(0)
    standard.set_random_seed(0)
    shifted = [to_tensor(light, image) for _ in range(10)]
    assert any(int(out.min()) == 0 for out in shifted) and all(out.shape == (3, 28, 28) for out in shifted)
    assert len({int(to_tensor(standard, image).float().mean()) for _ in range(10)}) > 1
