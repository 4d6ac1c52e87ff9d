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
