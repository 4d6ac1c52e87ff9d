"""Test accuracy on full Fashion-MNIST with the shipped recipes, beside the published benchmark.

    apt-get install dataset-fashion-mnist
    python -m benchmarks.fashion_mnist_accuracy [mlp cnn] [--precision P] [any zoo fit override ...]

Runs `zoo fit` and then `zoo test` (best checkpoint, the 10k test set) through the real CLI, timed
on this machine, and adds the result, with the machine it ran on, to
benchmarks/results/fashion_mnist_accuracy.json (one entry per recipe, overrides and machine).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import zoo  # runs `zoo` in a subprocess; its stderr tail on failure
from benchmarks.machine import describe
from zoo.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPES = ("mlp", "cnn")  # configs/fashion_mnist/<recipe>.yaml
# From the Fashion-MNIST README's benchmark table (/usr/share/doc/dataset-fashion-mnist/README.md.gz).
PUBLISHED = {
    "MLP 256-128-100 (no augmentation)": 0.8833,
    "2 Conv+pooling+BN (no augmentation)": 0.934,
    "2 Conv+2 FC, random horizontal flips": 0.939,
    "ResNet18, normalization + flips + translation + rotation": 0.949,
}


def run(recipe: str, workdir: Path, precision: str, overrides: list[str]) -> dict:
    config = str(ROOT / "configs" / "fashion_mnist" / f"{recipe}.yaml")
    start = time.perf_counter()
    zoo("fit", "--config", config, "--trainer.logger", "CSVLogger", "--trainer.enable_progress_bar", "false",
              "--trainer.precision", precision, *overrides, cwd=workdir)  # fmt: skip
    fit_s = time.perf_counter() - start
    ckpt = next((workdir / "runs").rglob("best.ckpt"))
    zoo("test", "--config", config, *overrides, "--ckpt_path", str(ckpt), "--trainer.logger", "CSVLogger",
               "--trainer.enable_progress_bar", "false", "--experiment", f"{recipe}_test", cwd=workdir)  # fmt: skip
    with open(next((workdir / "runs" / f"{recipe}_test").rglob("metrics.csv"))) as f:
        metrics = {
            k: float(v) for row in csv.DictReader(f) for k, v in row.items() if v and k.startswith("test/")
        }
    model = load_checkpoint(ckpt)
    return {
        "recipe": f"configs/fashion_mnist/{recipe}.yaml",
        "precision": precision,
        "overrides": overrides,
        "machine": describe(),
        "test_acc": metrics["test/acc"],
        "test_ece": metrics["test/ece"],
        "test_f1": metrics["test/f1"],
        "fit_wall_s": round(fit_s, 1),
        "max_epochs": torch.load(next((workdir / "runs").rglob("last.ckpt")), weights_only=True)["epoch"] + 1,
        "best_epoch": int(model.info["epoch"] or 0) + 1,
        "params": sum(p.numel() for p in model.parameters()),
    }


def table(results: dict) -> str:
    rows = [
        "| model | test acc | ECE | fit wall time | epochs (best) | params |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results["zoo"].items():
        rows.append(f"| zoo {name} | **{r['test_acc']:.4f}** | {r['test_ece']:.4f} | "
                    f"{r['fit_wall_s'] / 60:.1f} min | {r['max_epochs']} ({r['best_epoch']}) | {r['params']:,} |")  # fmt: skip
    for name, acc in PUBLISHED.items():
        rows.append(f"| published: {name} | {acc:.4f} | – | – | – | – |")
    return "\n".join(rows)


def machine_label(m: dict) -> str:
    return f"{m['torch_cpu_capability']}{' + BF16' if m['bf16_cpu'] else ''} CPU, {m['cores']} cores"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="32-true")
    a, rest = parser.parse_known_args()
    # recipe names anywhere; everything else goes to `zoo fit` (argparse would take override values for recipes)
    recipes = [r for r in rest if r in RECIPES] or list(RECIPES)
    overrides = [r for r in rest if r not in RECIPES]
    out = RESULTS / "fashion_mnist_accuracy.json"
    results = json.loads(out.read_text()) if out.exists() else {"zoo": {}}
    for recipe in recipes:
        with tempfile.TemporaryDirectory() as tmp:
            r = run(recipe, Path(tmp), a.precision, overrides)
        key = " ".join([recipe, *overrides]) + f" [{a.precision}, {machine_label(r['machine'])}]"
        results["zoo"][key] = r
        RESULTS.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(table(results), flush=True)
