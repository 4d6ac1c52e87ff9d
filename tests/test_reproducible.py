"""Same seed, same run: augmentation included, in the main process and in loader workers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

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


def test_ckpt_path_last_resumes_the_latest_run_of_the_experiment(run_zoo, image_folder, capsys):
    args = [
        "fit",
        "--config",
        CONFIGS / "cnn.yaml",
        "--data.root",
        image_folder,
        *FAST,
        "--trainer.logger",
        "false",
    ]
    assert run_zoo(*args, "--ckpt_path", "last")[0] == 2  # nothing to resume yet: one line, no training
    assert "--ckpt_path last: no run under runs/cnn has checkpoints/last.ckpt" in capsys.readouterr().err
    assert run_zoo(*args)[0] == 0
    assert run_zoo(*args, "--trainer.max_epochs", 2, "--ckpt_path", "last")[0] == 0
    assert "resuming runs/cnn/version_0/checkpoints/last.ckpt" in capsys.readouterr().err
    first, resumed = (
        torch.load(Path(f"runs/cnn/version_{v}/checkpoints/last.ckpt"), weights_only=True) for v in (0, 1)
    )
    assert (
        resumed["epoch"] == 1 and resumed["global_step"] == 2 * first["global_step"]
    )  # continued, not restarted


def test_deterministic_flag_gives_identical_metrics(run_zoo, image_folder):
    """`--trainer.deterministic true` (torch.use_deterministic_algorithms) with one seed: every logged value."""
    args = ["fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, *FAST, "--trainer.max_epochs", 2,
            "--data.batch_size", 8, "--trainer.logger", "CSVLogger", "--trainer.deterministic", "true"]  # fmt: skip
    for _ in range(2):
        assert run_zoo(*args)[0] == 0
    first, again = ((r / "metrics.csv").read_text() for r in sorted(Path("runs/cnn").glob("version_*")))
    assert "val/acc" in first and len(first.splitlines()) > 4
    assert first == again  # losses, accuracies, learning rates: byte for byte
