"""Test accuracy on full Fashion-MNIST with the shipped recipes, beside the published benchmark.

    apt-get install dataset-fashion-mnist && python benchmarks/fashion_mnist_accuracy.py [mlp cnn]

Runs `zoo fit` and then `zoo test` (best checkpoint, the 10k test set) through the real CLI, timed
on this machine, and writes benchmarks/results/fashion_mnist_accuracy.json.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zoo.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# From the Fashion-MNIST README's benchmark table (/usr/share/doc/dataset-fashion-mnist/README.md.gz).
PUBLISHED = {
    "MLP 256-128-100 (no augmentation)": 0.8833,
    "2 Conv+pooling+BN (no augmentation)": 0.934,
    "2 Conv+2 FC, random horizontal flips": 0.939,
    "ResNet18, normalization + flips + translation + rotation": 0.949,
}


def zoo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def run(recipe: str, workdir: Path) -> dict:
    config = str(ROOT / "configs" / "fashion_mnist" / f"{recipe}.yaml")
    start = time.perf_counter()
    fit = zoo(
        "fit",
        "--config",
        config,
        "--trainer.logger",
        "CSVLogger",
        "--trainer.enable_progress_bar",
        "false",
        cwd=workdir,
    )
    fit_s = time.perf_counter() - start
    if fit.returncode != 0:
        raise SystemExit(fit.stderr[-3000:])
    ckpt = next((workdir / "runs").rglob("best.ckpt"))
    test = zoo("test", "--config", config, "--ckpt_path", str(ckpt), "--trainer.logger", "CSVLogger",
               "--trainer.enable_progress_bar", "false", "--experiment", f"{recipe}_test", cwd=workdir)  # fmt: skip
    if test.returncode != 0:
        raise SystemExit(test.stderr[-3000:])
    with open(next((workdir / "runs" / f"{recipe}_test").rglob("metrics.csv"))) as f:
        metrics = {
            k: float(v) for row in csv.DictReader(f) for k, v in row.items() if v and k.startswith("test/")
        }
    model = load_checkpoint(ckpt)
    return {
        "recipe": f"configs/fashion_mnist/{recipe}.yaml",
        "test_acc": metrics["test/acc"],
        "test_ece": metrics["test/ece"],
        "test_f1": metrics["test/f1"],
        "fit_wall_s": round(fit_s, 1),
        "epochs": int(model.info["epoch"] or 0) + 1,
        "params": sum(p.numel() for p in model.parameters()),
    }


def table(results: dict) -> str:
    rows = [
        "| model | test acc | ECE | fit wall time | epochs | params |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results["zoo"].items():
        rows.append(f"| zoo {name} (`{r['recipe']}`) | **{r['test_acc']:.4f}** | {r['test_ece']:.4f} | "
                    f"{r['fit_wall_s'] / 60:.1f} min | {r['epochs']} | {r['params']:,} |")  # fmt: skip
    for name, acc in PUBLISHED.items():
        rows.append(f"| published: {name} | {acc:.4f} | – | – | – | – |")
    return "\n".join(rows)


if __name__ == "__main__":
    recipes = sys.argv[1:] or ["mlp", "cnn"]
    out = RESULTS / "fashion_mnist_accuracy.json"
    results = json.loads(out.read_text()) if out.exists() else {"zoo": {}}
    results["machine"] = f"{os.cpu_count()} CPU cores, no GPU"
    for recipe in recipes:
        with tempfile.TemporaryDirectory() as tmp:
            results["zoo"][recipe] = run(recipe, Path(tmp))
        RESULTS.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(table(results), flush=True)
