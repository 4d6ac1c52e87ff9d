"""Grad-CAM must be shown to work, not just to run."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from apps.explain import METHODS, SALIENCY, explain, target_layer
from zoo.finetune import TimmClassifier
from zoo.scratch import CNNClassifier, MLPClassifier

SIZE, SHAPE = 32, 9


def _shape(kind: int) -> np.ndarray:
    mask = np.zeros((SHAPE, SHAPE), np.float32)
    if kind == 0:  # an X
        idx = np.arange(SHAPE)
        mask[idx, idx] = mask[idx, SHAPE - 1 - idx] = 1
    else:  # an O
        mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 1
    return mask


def shapes_dataset(n: int, seed: int):
    """Class = which shape (X or O) is in the image; a heavier, class-neutral bright bar distracts.

    A net that looks at brightness alone (e.g. random weights) is drawn to the bar; one that
    learned the task looks at the shape. Returns images, labels and each shape's top-left corner.
    """
    rng = np.random.default_rng(seed)
    images = rng.normal(0.2, 0.05, (n, 1, SIZE, SIZE)).clip(0, 1).astype(np.float32)
    labels = rng.integers(0, 2, n)
    corners = []
    for i in range(n):
        while True:
            r0, c0 = rng.integers(0, SIZE - SHAPE + 1, 2)
            br, bc = rng.integers(0, SIZE - 3), rng.integers(0, SIZE - 14)
            if br + 3 < r0 - 1 or br > r0 + SHAPE or bc + 14 < c0 - 1 or bc > c0 + SHAPE:
                break  # the bar does not touch the shape
        images[i, 0, br : br + 3, bc : bc + 14] = 1.0
        images[i, 0, r0 : r0 + SHAPE, c0 : c0 + SHAPE] = np.maximum(
            images[i, 0, r0 : r0 + SHAPE, c0 : c0 + SHAPE], _shape(labels[i])
        )
        corners.append((r0, c0))
    return torch.from_numpy(images), torch.from_numpy(labels), corners


def peak_hit_rate(model, images, corners, method="GradCAM") -> float:
    """Share of images whose heat-map maximum lies on the shape (1 px margin for upsampling)."""
    hits = 0
    for image, (r0, c0) in zip(images, corners, strict=True):
        heat = explain(model, image, method).heatmap
        r, c = np.unravel_index(heat.argmax(), heat.shape)
        hits += (r0 - 1 <= r <= r0 + SHAPE) and (c0 - 1 <= c <= c0 + SHAPE)
    return hits / len(corners)


ARGS = dict(
    class_names=["x", "o"], image_size=SIZE, channels=1, channels_per_block=(16, 32), lr=3e-3, dropout=0.0
)


@pytest.fixture(scope="module")
def shapes():
    torch.manual_seed(0)
    train = shapes_dataset(2000, seed=0)
    val = shapes_dataset(100, seed=1)
    model = CNNClassifier(**ARGS)
    trainer = L.Trainer(max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(model, DataLoader(TensorDataset(*train[:2]), batch_size=64, shuffle=True))
    return model.eval(), val


def test_trained_cnn_looks_at_the_evidence(shapes):
    model, (images, labels, corners) = shapes
    assert (model(images).argmax(-1) == labels).float().mean() >= 0.95
    # Measured here: GradCAM 0.96-0.99, GradCAM++ 0.96-0.98, ScoreCAM 0.97-1.0 (4 and 6 epochs).
    # HiResCAM and LayerCAM reach only 0.77-0.79 at this 8x8 resolution, and class-agnostic
    # EigenCAM ~0.5, so they are not held to the bar.
    for method in ("GradCAM", "GradCAM++", "ScoreCAM"):
        assert peak_hit_rate(model, images, corners, method) >= 0.8, method


def test_random_weights_fail_the_same_test(shapes):
    _, (images, _, corners) = shapes
    torch.manual_seed(0)
    assert peak_hit_rate(CNNClassifier(**ARGS).eval(), images, corners) < 0.8


def test_every_method_runs_on_cnn_and_timm_and_mlp_gets_saliency():
    torch.manual_seed(0)
    cnn = CNNClassifier(class_names=["a", "b", "c"], image_size=16, channels=3).eval()
    timm_net = TimmClassifier(
        backbone="resnet10t", pretrained=False, class_names=["a", "b"], image_size=32, channels=3
    ).eval()
    assert target_layer(timm_net) is timm_net.net.layer4
    for model, size in ((cnn, 16), (timm_net, 32)):
        for method in METHODS:
            result = explain(model, torch.rand(3, size, size), method, class_index=1)
            assert result.method == method and result.class_index == 1
            assert result.heatmap.shape == (size, size) and result.overlay.shape == (size, size, 3)
            assert result.overlay.dtype == np.uint8 and 0 <= result.heatmap.min() <= result.heatmap.max() <= 1
    mlp = MLPClassifier(class_names=["a", "b"], image_size=16, channels=1).eval()
    assert target_layer(mlp) is None
    result = explain(mlp, torch.rand(1, 16, 16), "GradCAM")
    assert result.method == SALIENCY and "no conv layers" in result.note
    assert result.heatmap.max() == pytest.approx(1.0)


def test_explained_in_float32_even_for_a_half_precision_model():
    torch.manual_seed(0)
    model = CNNClassifier(class_names=["a", "b"], image_size=16, channels=1).eval()
    image = torch.rand(1, 16, 16)
    reference = explain(model, image).heatmap
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as in a bf16-mixed training/serving context
        under_autocast = explain(model, image).heatmap
    assert np.abs(under_autocast - reference).max() < 1e-6  # autocast is switched off inside
    # Weights already rounded to bf16 still explain, in float32, close to the original.
    rounded = explain(model.to(torch.bfloat16), image.to(torch.bfloat16))
    assert rounded.heatmap.dtype == np.float32
    assert np.abs(rounded.heatmap - reference).max() < 0.05
