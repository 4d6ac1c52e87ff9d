"""Shared fixtures: tiny image folders written as real files, and the zoo CLI run in-process."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.cli import main

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
torch.set_num_threads(2)

# Fast settings every CLI test adds unless it is testing them.
FAST = [
    "--trainer.max_epochs",
    "1",
    "--trainer.log_every_n_steps",
    "1",
    "--trainer.enable_model_summary",
    "false",
    "--data.num_workers",
    "0",
]


def write_class_images(
    folder: Path, n: int, size: int = 16, fmt: str = "png", seed: int = 0, shade: int = 0
) -> None:
    """n real image files; each class gets a different brightness so a model can learn it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = np.clip(rng.normal(40 + shade, 20, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:03d}.{fmt}")


def make_folder(
    root: Path, classes=("cat", "dog", "owl"), n: int = 10, layout: str = "class", size: int = 16
) -> Path:
    """An image folder in either layout: root/<class>/* or root/{train,val}/<class>/*."""
    for c, name in enumerate(classes):
        if layout == "class":
            write_class_images(root / name, n, size, seed=c, shade=60 * c)
        else:
            write_class_images(root / "train" / name, n, size, seed=c, shade=60 * c)
            write_class_images(root / "val" / name, max(2, n // 3), size, seed=10 + c, shade=60 * c)
    return root


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN trained for 6 epochs on a 3-class RGB folder, shared by the inference tests."""
    root = tmp_path_factory.mktemp("trained")
    make_folder(root / "images", n=12, layout="split")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        rc = main([
            "fit", "--config", str(Path(__file__).resolve().parents[1] / "configs" / "cnn.yaml"),
            "--data.root", str(root / "images"), "--data.image_size", "16", "--data.channels", "3",
            "--model.channels_per_block", "[8, 16]", *FAST, "--trainer.max_epochs", "6", "--data.batch_size", "8", "--trainer.logger", "false",
        ])  # fmt: skip
    finally:
        os.chdir(cwd)
    assert rc == 0
    return next((root / "runs").rglob("best.ckpt"))


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "images")


@pytest.fixture
def run_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `zoo ARGS` in-process from tmp_path; returns (exit status, runs folder)."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, Path]:
        return main([str(a) for a in args]), tmp_path / "runs"

    return run


def only_run_dir(runs: Path, experiment: str) -> Path:
    dirs = sorted((runs / experiment).glob("version_*"))
    assert dirs, f"no run folder under {runs / experiment}"
    return dirs[-1]
