"""Same seed, same run: augmentation included, in the main process and in loader workers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import FAST

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def losses(run: Path) -> list[float]:
    with open(run / "metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


@pytest.mark.parametrize("workers", [0, 1])
def test_same_seed_same_metrics_and_another_seed_other_metrics(run_zoo, image_folder, workers):
    args = ["fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, *FAST, "--trainer.max_epochs", 2,
            "--data.batch_size", 8, "--data.num_workers", workers, "--trainer.logger", "CSVLogger"]  # fmt: skip
    for seed in (42, 42, 7):
        assert run_zoo(*args, "--seed_everything", seed)[0] == 0
    runs = sorted(Path("runs/cnn").glob("version_*"))
    first, again, other = (losses(r) for r in runs)
    assert len(first) >= 4  # a step logged every step (FAST), 2 epochs
    assert first == again  # augmentation (pad-crop, flip) included: albumentations is seeded too
    assert first != other
