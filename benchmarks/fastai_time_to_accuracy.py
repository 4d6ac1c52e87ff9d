"""Time to a fixed validation accuracy: zoo's fine-tuning recipe vs fastai's `vision_learner` + `fine_tune`.

    python3 -m venv .venv-fastai && .venv-fastai/bin/pip install torch==2.14.1 torchvision==0.29.1 fastai timm
    python -m benchmarks.fastai_time_to_accuracy [--per-class 400] [--epochs 3] [--rounds 3] [--target 0.95]

Same image folder (Fashion-MNIST classes 5-9 as 28 px PNGs, `--per-class` train and 200 val
images per class, resized to 32 px), same architecture (timm resnet10t, one input channel) and
the same starting weights: the classes 0-4 pretraining of benchmarks.transfer, saved as plain
timm tensors (made here first if missing). Both tools load them the timm way
(`pretrained_cfg_overlay=dict(file=...)` for fastai, `--model.weights` for zoo); both get batch
size 64, inputs scaled to mean 0.5 / std 0.5, `1 + epochs` epochs with the body frozen for the
first and their default loader workers.
- fastai: `vision_learner(dls, "resnet10t", n_in=1, metrics=accuracy).fine_tune(epochs)`, its
  defaults (lr 2e-3, Adam, one-cycle, its head), `item_tfms=Resize(32)` and no augmentation;
- zoo: `zoo fit --config configs/resnet18_finetune.yaml` with the backbone, size and stats above
  and `--model.lr 0.003 --data.augment light` (benchmarks.transfer's recipe).
Each tool runs in its own process (fastai in .venv-fastai); the clock starts when the process is
launched, so imports and data set-up count. Reported per tool: seconds to the end of the first
epoch whose validation accuracy reaches `--target`, and the final validation accuracy; medians
over alternating rounds. Writes benchmarks/results/fastai_time_to_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FASTAI_PYTHON = ROOT / ".venv-fastai" / "bin" / "python"
BATCH = 64
TARGETS = (0.9, 0.92, 0.94, 0.95, 0.96)  # also reported, from the same curves


def fastai_child(root: str, weights: str, epochs: int, clock: str) -> None:
    """Runs inside .venv-fastai: the fastai side, written the way its docs teach."""
    from fastai.vision.all import (
        Callback,
        CategoryBlock,
        DataBlock,
        GrandparentSplitter,
        ImageBlock,
        Normalize,
        PILImageBW,
        Resize,
        accuracy,
        get_image_files,
        parent_label,
        vision_learner,
    )

    class Clock(Callback):
        order = 90  # after the Recorder has the epoch's metrics

        def after_epoch(self) -> None:
            acc = float(self.learn.recorder.values[-1][-1])
            with open(clock, "a") as f:
                f.write(json.dumps({"time": time.time(), "epoch": self.epoch, "val_acc": acc}) + "\n")

    block = DataBlock(
        blocks=(ImageBlock(cls=PILImageBW), CategoryBlock),
        get_items=get_image_files,
        splitter=GrandparentSplitter(train_name="train", valid_name="val"),
        get_y=parent_label,
        item_tfms=Resize(32),
        batch_tfms=Normalize.from_stats([0.5], [0.5]),
    )
    dls = block.dataloaders(root, bs=BATCH)
    learn = vision_learner(dls, "resnet10t", n_in=1, metrics=accuracy, pretrained=True,
                           pretrained_cfg_overlay=dict(file=weights), cbs=Clock())  # fmt: skip
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(epochs)


def zoo_command(root: Path, weights: Path, epochs: int) -> list[str]:
    from benchmarks.transfer import COMMON

    return [sys.executable, "-m", "zoo.cli", "fit", *COMMON, "--data.root", str(root), "--model.weights", str(weights),
            "--model.pretrained", "false", "--model.freeze_epochs", "1", "--model.lr", "0.003",
            "--data.batch_size", str(BATCH), "--trainer.max_epochs", str(epochs + 1),
            "--trainer.callbacks+=benchmarks.clock.EpochClock", "--experiment", "race"]  # fmt: skip


def timed(cmd: list[str], cwd: Path) -> list[dict]:
    """Launch `cmd` and return its clock lines with `time` made relative to the launch."""
    clock = cwd / f"clock_{time.time_ns()}.jsonl"
    env = {**os.environ, "WANDB_MODE": "disabled", "ZOO_BENCH_CLOCK": str(clock), "PYTHONPATH": str(ROOT)}
    start = time.time()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    lines = [json.loads(line) for line in clock.read_text().splitlines()]
    return [{**line, "time": line["time"] - start} for line in lines]


def median_or_none(times: list[float | None]) -> float | None:
    """The median time, or None when a round never reached the target."""
    return None if None in times else statistics.median(times)


def time_to(curve: list[dict], target: float) -> float | None:
    return next((p["time"] for p in curve if p["val_acc"] >= target), None)


def write_data(root: Path, per_class: int) -> None:
    import numpy as np

    from benchmarks.transfer import write_subset
    from datamodules.fashion_mnist import DEBIAN_DIR, load_split

    x, y = load_split(Path(DEBIAN_DIR), "train")
    write_subset(root, x, y, range(5, 10), {"train": per_class, "val": 200}, np.random.default_rng(7))


def ensure_backbone() -> Path:
    from benchmarks.transfer import BACKBONE, PRETRAIN_EPOCHS, pretrain, save_backbone
    from datamodules.fashion_mnist import DEBIAN_DIR, load_split

    if not BACKBONE.exists():
        with tempfile.TemporaryDirectory() as tmp:
            save_backbone(
                pretrain(Path(tmp), PRETRAIN_EPOCHS, *load_split(Path(DEBIAN_DIR), "train")), BACKBONE
            )
    return BACKBONE


def main(per_class: int, epochs: int, rounds: int, target: float) -> dict:
    if not FASTAI_PYTHON.exists():
        raise SystemExit(
            f"no fastai environment at {FASTAI_PYTHON}; create it with the command in this file's docstring"
        )
    from benchmarks.machine import describe

    weights = ensure_backbone()
    curves: dict[str, list[list[dict]]] = {"fastai": [], "zoo": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_data(work / "data", per_class)
        fastai_cmd = [str(FASTAI_PYTHON), "-m", "benchmarks.fastai_time_to_accuracy", "--fastai-child",
                      str(work / "data"), str(weights), str(epochs)]  # fmt: skip
        for _ in range(rounds):
            curves["fastai"].append(timed(fastai_cmd, work))
            curves["zoo"].append(timed(zoo_command(work / "data", weights, epochs), work))
    out: dict = {
        "machine": describe(),
        "per_class": per_class,
        "epochs": 1 + epochs,
        "rounds": rounds,
        "target": target,
        "curves": curves,
    }
    return summarise(out)


def summarise(out: dict) -> dict:
    """Medians per tool from the curves, at `--target` and at every preset target.

    `common_target` is the highest preset target that both tools reached in every round: the fairest
    single figure when `--target` turned out to be out of reach for one of them.
    """
    target = out["target"]
    for tool, runs in out["curves"].items():
        times = [time_to(c, target) for c in runs]
        out[tool] = {
            "time_to_target_s": times,
            "median_time_to_target_s": median_or_none(times),
            "median_final_val_acc": statistics.median(c[-1]["val_acc"] for c in runs),
            "median_best_val_acc": statistics.median(max(p["val_acc"] for p in c) for c in runs),
            "median_total_s": statistics.median(c[-1]["time"] for c in runs),
            "median_time_to_s_by_target": {t: median_or_none([time_to(c, t) for c in runs]) for t in TARGETS},
        }
    z, f = out["zoo"]["median_time_to_target_s"], out["fastai"]["median_time_to_target_s"]
    out["ratio_zoo_to_fastai"] = z / f if z and f else None
    reached = [
        t for t in TARGETS if all(out[tool]["median_time_to_s_by_target"][t] for tool in ("zoo", "fastai"))
    ]
    out["common_target"] = max(reached, default=None)
    if reached:
        by = {tool: out[tool]["median_time_to_s_by_target"][max(reached)] for tool in ("zoo", "fastai")}
        out["ratio_at_common_target"] = by["zoo"] / by["fastai"]
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--fastai-child"]:
        fastai_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), os.environ["ZOO_BENCH_CLOCK"])
        sys.exit()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.95)
    a = parser.parse_args()
    out = main(a.per_class, a.epochs, a.rounds, a.target)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fastai_time_to_accuracy.json").write_text(json.dumps(out, indent=1) + "\n")
    for tool in ("zoo", "fastai"):
        r = out[tool]
        print(f"{tool}: {r['median_time_to_target_s']} s to val acc {a.target}, final {r['median_final_val_acc']:.4f}, "
              f"total {r['median_total_s']:.0f} s")  # fmt: skip
    print(
        f"zoo / fastai time to {a.target}: {out['ratio_zoo_to_fastai']}; to {out['common_target']} (the highest target "
        f"both reached): {out.get('ratio_at_common_target')} (goal <= 0.5; medians of {a.rounds} rounds)"
    )
