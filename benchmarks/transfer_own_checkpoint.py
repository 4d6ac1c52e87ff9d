"""Transfer learning that visibly pays: pretrain on Fashion-MNIST classes 0-4, fine-tune on 5-9.

    python -m benchmarks.transfer_own_checkpoint [--per-class 20] [--seeds 3] [--reuse-backbone]

1. Pretrain resnet10t from scratch on classes 0-4 (2,000 training images each) with `zoo fit`.
2. On classes 5-9, with `--per-class` labelled training images per class (plus as many for
   validation, which picks the checkpoint): fine-tune from step 1's checkpoint with
   `--model.weights` and freeze->unfreeze, and train the same net from scratch.
3. `zoo test` both on the 5,000 test images of classes 5-9. Repeated over seeds (different
   labelled subsets); medians reported. Adds an entry per `--per-class` to
   benchmarks/results/transfer.json; `--reuse-backbone` skips step 1 when its weights are saved.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, ROOT, write_class, write_subset, zoo, zoo_test_accuracy
from benchmarks.machine import describe
from datamodules.fashion_mnist import DEBIAN_DIR, load_split

BACKBONE = ROOT / "benchmarks" / ".data" / "resnet10t_fmnist_classes0-4.safetensors"
COMMON = ["--config", str(ROOT / "configs" / "resnet18_finetune.yaml"), "--model.backbone", "resnet10t",
          "--data.image_size", "32", "--data.channels", "1", "--data.mean", "[0.5]", "--data.std", "[0.5]",
          "--data.augment", "light", "--data.hflip", "true", "--trainer.logger", "CSVLogger", "--trainer.enable_progress_bar", "false",
          "--trainer.enable_model_summary", "false"]  # fmt: skip


PRETRAIN_EPOCHS = 4


def main(per_class: int, seeds: int, pretrain_epochs: int, finetune_epochs: int, reuse: bool) -> dict:
    train_x, train_y = load_split(Path(DEBIAN_DIR), "train")
    test_x, test_y = load_split(Path(DEBIAN_DIR), "test")
    results: dict = {
        "machine": describe(),
        "per_class": per_class,
        "pretrain_epochs": pretrain_epochs,
        "finetune_epochs": finetune_epochs,
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if reuse and BACKBONE.exists():
            pretrained = BACKBONE  # the same tensors as the checkpoint, without its classes 0-4 head
            results["pretrained"] = f"reused {BACKBONE.relative_to(ROOT)}"
        else:
            start = time.perf_counter()
            pretrained = pretrain(work, pretrain_epochs, train_x, train_y)
            results["pretrain_wall_s"] = round(time.perf_counter() - start, 1)
            results["pretrain_val_acc"] = float(zoo_best(pretrained))
            save_backbone(pretrained, BACKBONE)
        for seed in range(seeds):
            # 2. the small labelled set of classes 5-9, and their full test set
            data = work / f"small_{seed}"
            write_subset(data, train_x, train_y, range(5, 10), {"train": per_class, "val": per_class},
                         np.random.default_rng(100 + seed))  # fmt: skip
            for c in range(5, 10):
                write_class(data / "test", test_x, np.flatnonzero(test_y == c), c)
            run = {"seed": seed}
            for name, extra in (
                (
                    "finetuned",
                    [
                        "--model.weights",
                        str(pretrained),
                        "--model.pretrained",
                        "false",
                        "--model.freeze_epochs",
                        "3",
                    ],
                ),
                # a random backbone learns at the full lr: the 0.1x of the fine-tuning recipe is for pretrained ones
                (
                    "scratch",
                    [
                        "--model.pretrained",
                        "false",
                        "--model.freeze_epochs",
                        "0",
                        "--model.backbone_lr_mult",
                        "1",
                    ],
                ),
            ):
                experiment = f"{name}_{seed}"
                zoo("fit", *COMMON, *extra, "--data.root", str(data), "--data.batch_size", "16", "--model.lr", "0.003",
                    "--trainer.max_epochs", str(finetune_epochs), "--experiment", experiment, cwd=work)  # fmt: skip
                ckpt = next((work / "runs" / experiment).rglob("best.ckpt"))
                run[name] = zoo_test_accuracy(
                    work, f"{experiment}_test", ckpt, data, [*COMMON, "--model.pretrained", "false"]
                )
            run["gain_points"] = 100 * (run["finetuned"] - run["scratch"])
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
    for key in ("finetuned", "scratch", "gain_points"):
        results[f"median_{key}"] = statistics.median(r[key] for r in results["runs"])
    return results


def pretrain(work: Path, epochs: int, train_x: np.ndarray, train_y: np.ndarray) -> Path:
    """`zoo fit` resnet10t from scratch on classes 0-4 (2,000 train + 200 val images each); its best.ckpt."""
    pre = work / "pre"
    write_subset(pre, train_x, train_y, range(5), {"train": 2000, "val": 200}, np.random.default_rng(0))
    zoo("fit", *COMMON, "--data.root", str(pre), "--model.pretrained", "false", "--model.freeze_epochs", "0", "--model.backbone_lr_mult", "1",
        "--model.lr", "0.003", "--trainer.max_epochs", str(epochs), "--experiment", "pretrain", cwd=work)  # fmt: skip
    return next((work / "runs" / "pretrain").rglob("best.ckpt"))


def save_backbone(ckpt: Path, path: Path) -> None:
    """The pretrained net as plain timm tensors without its head: what `pretrained_cfg_overlay=dict(file=...)`
    and `--model.weights` both load (benchmarks.fastai_time_to_accuracy starts both tools from it)."""
    from safetensors.torch import save_file

    from zoo.checkpoint import load_checkpoint

    state = load_checkpoint(ckpt).net.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items() if not k.startswith("fc.")}, str(path))


def zoo_best(ckpt: Path) -> float:
    from zoo.checkpoint import load_checkpoint

    return load_checkpoint(ckpt).info["val_acc"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pretrain-epochs", type=int, default=PRETRAIN_EPOCHS)
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument(
        "--reuse-backbone", action="store_true", help=f"start from {BACKBONE.name} if present"
    )
    a = parser.parse_args()
    out = main(a.per_class, a.seeds, a.pretrain_epochs, a.finetune_epochs, a.reuse_backbone)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "transfer_own_checkpoint.json"  # one entry per labelled-set size
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved = saved if "per_class" not in saved else {str(saved["per_class"]): saved}
    path.write_text(json.dumps({**saved, str(a.per_class): out}, indent=1) + "\n")
    print(f"test acc on classes 5-9, {a.per_class} labelled images/class: fine-tuned {out['median_finetuned']:.4f}, "
          f"scratch {out['median_scratch']:.4f}, gain {out['median_gain_points']:+.1f} points (median of {a.seeds})")  # fmt: skip
