"""Training-loop overhead: `zoo fit` vs a minimal hand-written PyTorch loop, side by side.

    python -m benchmarks.loop_overhead [--steps 150] [--rounds 7]

Same CNN (configs/cnn.yaml's net), same images (the bundled sample, 28 px, grayscale, no
augmentation on either side), batch size 64, AdamW at a constant lr, same number of steps, one
loader worker each, no validation. zoo runs through its real path and defaults: `zoo fit` (zoo.cli.main,
in-process), the data module, the LightningModule, every default callback (both checkpoints each epoch, the LR
monitor, the progress bar: off when stdout is not a terminal, as in any log) and the default loggers (W&B,
offline without a key, and CSV) at their default logging interval. zoo trains conv nets channels_last; the plain loop runs both in the
default layout and in channels_last, so the second ratio is the framework's overhead alone.
Rounds alternate; medians of images/s are reported, and the median of each round's paired ratio (zoo over
the plain loop run right after it), which drifts less with the machine's speed than a ratio of medians.
Writes benchmarks/results/loop_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.machine import describe
from datamodules import ImageFolderDataModule
from zoo.cli import main as zoo_main
from zoo.nets import CNN

RESULTS = Path(__file__).parent / "results"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cnn.yaml"
BATCH = 64


class StepTimer(L.Callback):
    """Wall time from the first training batch to the last (no start-up, no validation)."""

    images_per_s = 0.0  # of the last run, read back by the benchmark after `zoo fit` returns

    def __init__(self, skip: int = 5) -> None:
        self.skip, self.start, self.end, self.steps = skip, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.skip:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end, self.steps = time.perf_counter(), trainer.global_step - self.skip

    def on_train_end(self, trainer, pl_module) -> None:
        StepTimer.images_per_s = self.steps * BATCH / (self.end - self.start)


def zoo_images_per_s(steps: int, workdir: Path) -> float:
    # the class zoo loads, even when this file runs as __main__
    from benchmarks.loop_overhead import StepTimer as Timer

    Timer.images_per_s = 0.0
    code = zoo_main(["fit", "--config", str(CONFIG), "--data.augment", "none", "--data.num_workers", "1",
                 "--data.batch_size", str(BATCH), "--model.scheduler", "constant", "--model.lr", "0.001",
                 "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1", "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
                 "--trainer.callbacks+=benchmarks.loop_overhead.StepTimer",
                 "--runs_dir", str(workdir)])  # fmt: skip
    assert code == 0 and Timer.images_per_s > 0, code
    return Timer.images_per_s


def plain_images_per_s(
    steps: int, images: torch.Tensor, labels: torch.Tensor, nhwc: bool, skip: int = 5
) -> float:
    torch.manual_seed(42)
    net = CNN(10, 1, (32, 64, 128), dropout=0.1, head_dropout=0.3)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = torch.optim.AdamW(net.parameters(), lr=0.001, weight_decay=0.01)
    mean = std = torch.tensor(0.5)
    loader = DataLoader(TensorDataset(images, labels), batch_size=BATCH, shuffle=True, drop_last=True,
                        num_workers=1, persistent_workers=True)  # fmt: skip
    done, start = 0, 0.0
    net.train()
    while done < steps:
        for x, y in loader:
            if done == skip:
                start = time.perf_counter()
            x = ((x.float() / 255 - mean) / std).contiguous(memory_format=fmt)
            loss = torch.nn.functional.cross_entropy(net(x), y, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return (steps - skip) * BATCH / (time.perf_counter() - start)


def main(steps: int, rounds: int) -> dict:
    if steps <= 5:
        raise SystemExit("--steps must be above 5: the first 5 steps are warm-up and not timed")
    torch.set_num_threads(os.cpu_count() or 1)
    dm = ImageFolderDataModule(None, image_size=28, channels=1, num_workers=0)
    dm.setup("fit")
    images = torch.stack(
        [torch.from_numpy(a).permute(2, 0, 1) for a in dm.splits["train"].items]
    )  # (N, 1, 28, 28) uint8
    labels = torch.from_numpy(dm.splits["train"].labels)
    zoo, plain, plain_nhwc = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            # zoo and its same-layout peer run back to back, first one then the other in turn, so the machine's
            # drift (this VM's speed wanders by +-10 % over minutes) hits both sides of each paired ratio alike
            if r % 2 == 0:
                zoo.append(zoo_images_per_s(steps, Path(tmp)))
            plain_nhwc.append(plain_images_per_s(steps, images, labels, nhwc=True))
            if r % 2 == 1:
                zoo.append(zoo_images_per_s(steps, Path(tmp)))
            plain.append(plain_images_per_s(steps, images, labels, nhwc=False))
    med = statistics.median
    return {
        "machine": describe(), "steps": steps, "rounds": rounds, "batch_size": BATCH,
        "zoo_images_per_s": zoo, "plain_images_per_s": plain, "plain_channels_last_images_per_s": plain_nhwc,
        "median_zoo": med(zoo), "median_plain": med(plain), "median_plain_channels_last": med(plain_nhwc),
        "ratio": med(zoo) / med(plain), "ratio_same_layout": med(zoo) / med(plain_nhwc),
        "paired_ratio": med([z / p for z, p in zip(zoo, plain, strict=True)]),
        "paired_ratio_same_layout": med([z / p for z, p in zip(zoo, plain_nhwc, strict=True)]),
    }  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=7)
    a = parser.parse_args()
    out = main(a.steps, a.rounds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "loop_overhead.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"zoo fit {out['median_zoo']:.0f} img/s vs plain PyTorch {out['median_plain']:.0f} img/s (NCHW), "
          f"{out['median_plain_channels_last']:.0f} img/s (channels_last, as zoo): paired ratios "
          f"{out['paired_ratio']:.3f} and {out['paired_ratio_same_layout']:.3f} (goal >= 0.97; medians of "
          f"{a.rounds} alternating rounds, {a.steps} steps)")  # fmt: skip
