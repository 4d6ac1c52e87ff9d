"""--data.sampler balanced: a seeded WeightedRandomSampler that draws each class equally often."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import WeightedRandomSampler

from datamodules import FashionMNISTDataModule, ImageFolderDataModule
from tests.conftest import FAST, only_run_dir, write_class_images
from tests.datamodules.test_fashion_mnist import write_idx

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture
def imbalanced_folder(tmp_path: Path) -> Path:
    """40 training images of class a, 4 of class b (9 % minority); 2 each for val."""
    root = tmp_path / "imbalanced"
    for name, n, shade in (("a", 40, 0), ("b", 4, 120)):
        write_class_images(root / "train" / name, n, size=8, seed=shade, shade=shade)
        write_class_images(root / "val" / name, 2, size=8, seed=shade + 1, shade=shade)
    return root


def epoch_labels(loader) -> list[int]:
    return torch.cat([labels for _, labels in loader]).tolist()


def drawn(dm, seed: int, epochs: int = 1) -> list[list[int]]:
    torch.manual_seed(seed)  # what seed_everything does; the sampler's generator starts from it
    loader = dm.train_dataloader()
    return [epoch_labels(loader) for _ in range(epochs)]


def test_balanced_sampler_draws_the_minority_about_as_often(imbalanced_folder):
    kw = {"image_size": 8, "num_workers": 0, "batch_size": 4}
    shuffled = ImageFolderDataModule(str(imbalanced_folder), **kw)
    balanced = ImageFolderDataModule(str(imbalanced_folder), sampler="balanced", **kw)
    for dm in (shuffled, balanced):
        dm.setup("fit")
    sampler = balanced.train_dataloader().sampler
    assert isinstance(sampler, WeightedRandomSampler) and sampler.replacement and sampler.num_samples == 44
    assert sorted(set(sampler.weights.tolist())) == pytest.approx([1 / 40, 1 / 4])
    (plain,) = drawn(shuffled, seed=0)
    first, second = drawn(balanced, seed=0, epochs=2)
    assert np.mean(plain) == pytest.approx(4 / 44)  # every image once: b stays at 9 %
    assert 0.3 < np.mean(first + second) < 0.7  # b's share (label 1) over 88 draws: about one half
    assert len(first) == 44  # an epoch is still one training set long
    assert first != second  # each epoch draws anew


def test_same_seed_same_draws(imbalanced_folder):
    dm = ImageFolderDataModule(str(imbalanced_folder), image_size=8, num_workers=0, sampler="balanced")
    dm.setup("fit")
    assert drawn(dm, seed=3, epochs=2) == drawn(dm, seed=3, epochs=2)
    assert drawn(dm, seed=3) != drawn(dm, seed=4)


def test_only_training_is_resampled(imbalanced_folder):
    dm = ImageFolderDataModule(str(imbalanced_folder), image_size=8, num_workers=0, sampler="balanced")
    dm.setup("fit")
    assert epoch_labels(dm.val_dataloader()) == [0, 0, 1, 1]
    assert not isinstance(dm.eval_loader("train").sampler, WeightedRandomSampler)


def test_fashion_mnist_balances_too(tmp_path):
    labels = np.array([0] * 90 + [1] * 10 + list(range(2, 10)) * 5)  # classes 1..9 rare
    for prefix, y in (("train", labels), ("t10k", np.arange(20) % 10)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", np.zeros((len(y), 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", y)
    dm = FashionMNISTDataModule(
        str(tmp_path), num_workers=0, batch_size=16, val_fraction=0.1, sampler="balanced"
    )
    dm.setup("fit")
    (first,) = drawn(dm, seed=0)
    assert np.mean(np.array(first) == 0) < 0.3  # 0.6 of the training set; a tenth of the draws on average


def test_cli_trains_with_the_balanced_sampler(run_zoo, imbalanced_folder, tmp_path):
    probe = tmp_path / "loader.json"
    rc, runs = run_zoo(
        "fit", "--config", CONFIGS / "cnn.yaml", "--data.root", imbalanced_folder, "--data.sampler", "balanced",
        "--data.batch_size", 8, "--model.channels_per_block", "[8, 16]", *FAST, "--trainer.max_epochs", 5,
        "--trainer.logger", "false", "--trainer.callbacks+=tests.helpers.LoaderProbe", "--trainer.callbacks.out", probe,
    )  # fmt: skip
    assert rc == 0
    saved = yaml.safe_load((only_run_dir(runs, "cnn") / "config.yaml").read_text())
    assert saved["data"]["init_args"]["sampler"] == "balanced"
    seen = json.loads(probe.read_text())
    assert seen["sampler"] == "WeightedRandomSampler"
    # 5 epochs of 5 full batches of 8: the 9 % minority class b (label 1) comes about half the time, not 9 %
    share = sum(seen["labels"]) / len(seen["labels"])
    assert len(seen["labels"]) == 5 * 40 and 0.35 < share < 0.65, share


def test_cli_names_the_samplers_for_a_wrong_one(run_zoo, imbalanced_folder, capsys):
    rc, runs = run_zoo("fit", "--config", CONFIGS / "cnn.yaml", "--data.sampler", "balance")
    assert rc == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("zoo: error: ")]
    assert len(errors) == 1 and "--data.sampler balance: choose one of shuffle, balanced" in errors[0]
    assert not runs.exists()
