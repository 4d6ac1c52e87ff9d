"""What the benchmark scripts share: `zoo` in a subprocess, Fashion-MNIST subsets written as folders."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.fashion_mnist import CLASS_NAMES
from datamodules.samples.make_sample import folder_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def zoo(*args: str, cwd: Path) -> str:
    """`zoo ARGS` in a subprocess with W&B off; exits with the tail of its stderr if it fails."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return proc.stderr


def write_class(root: Path, images: np.ndarray, indices: np.ndarray, c: int) -> None:
    """images[indices] as PNGs in root/<class c's folder>/."""
    folder = root / folder_name(CLASS_NAMES[c])
    folder.mkdir(parents=True, exist_ok=True)
    for i in indices:
        Image.fromarray(images[i]).save(folder / f"{i:05d}.png")


def write_subset(root: Path, images: np.ndarray, labels: np.ndarray, classes: range, sizes: dict[str, int],
                 rng: np.random.Generator) -> None:  # fmt: skip
    """For each class, a random draw of sizes[split] images per split (disjoint), as root/<split>/<class>/."""
    for c in classes:
        pick = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for split, n in sizes.items():
            write_class(root / split, images, pick[start : start + n], c)
            start += n


def zoo_test_accuracy(workdir: Path, experiment: str, ckpt: Path, data: Path, common: list[str]) -> float:
    """`zoo test` a checkpoint on data/test; its test/acc."""
    zoo("test", *common, "--data.root", str(data), "--ckpt_path", str(ckpt), "--experiment", experiment,
        "--trainer.logger", "CSVLogger", cwd=workdir)  # fmt: skip
    newest = max((workdir / "runs" / experiment).rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    with open(newest) as f:  # this call's run, even when the experiment already has others
        return float(next(r["test/acc"] for r in csv.DictReader(f) if r.get("test/acc")))
