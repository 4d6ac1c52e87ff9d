"""Training-loop overhead: `zoo fit` vs a minimal hand-written PyTorch loop, taking turns epoch by epoch.

    python -m benchmarks.loop_overhead [--epochs 150] [--runs 2] [--out loop_overhead.json]

Same CNN (configs/cnn.yaml's net), same images (the bundled sample, 28 px, grayscale, no augmentation on
either side), batch size 64 (15 steps an epoch), AdamW at a constant lr, one loader worker each, channels_last
on both sides, no validation. zoo runs its real path and defaults: `zoo fit` (zoo.cli.main, in-process), the
data module, the LightningModule, every default callback (both checkpoints, last.ckpt at epoch ends at most
every 10 s as by default; the LR monitor; the progress bar: off when stdout is not a terminal, as in any log)
and the default loggers (W&B, offline without a key, and CSV) at their default logging interval.

How it is timed. This VM's speed wanders: the same loop timed over 10-second windows one after another
varies by 5 % (20 % from slowest to fastest), and over 1.5-second epochs by 15 %, more than the overhead
measured. So the two loops take turns in one process, epoch by epoch: a callback in `zoo fit` trains one
epoch of the plain loop at each `on_train_epoch_start`, then lets zoo train its epoch, timed from one
`on_train_epoch_start` to the next (so zoo's epoch-end checkpoint, logging and loader restart are inside).
Each zoo epoch is paired with the plain epoch just before it, so both see the same machine, in the same
process (same threads, same allocator). The ratio is plain seconds over zoo seconds, summed over the pairs
after the warm-up; with ~15 % noise a pair, it takes ~150 pairs for a run to be good to about 1 %.
(Two processes taking turns gave runs 0.88 to 1.10 apart; the same loop against itself in one process
gave pairs from 0.75 to 1.30 and 16-pair runs from 0.94 to 1.03.) Writes benchmarks/results/loop_overhead.json.

What the turn-taking cannot see: work zoo leaves running in the background after its epoch (the W&B service
process) lands in the plain loop's turn. The run reports that process's CPU seconds, as a share of zoo's
time, an upper bound on what this hides.
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

RESULTS = Path(__file__).parent / "results"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cnn.yaml"
BATCH = 64
WARMUP = 3  # pairs left out: start-up (worker fork, first W&B writes, allocator warm-up)


class PlainLoop:
    """The hand-written loop: normalise, forward, loss, backward, step."""

    def __init__(self) -> None:
        from datamodules import ImageFolderDataModule
        from zoo.nets import CNN

        dm = ImageFolderDataModule(None, image_size=28, channels=1, num_workers=0)
        dm.setup("fit")
        images = torch.stack(
            [torch.from_numpy(a).permute(2, 0, 1) for a in dm.splits["train"].items]
        )  # (N, 1, 28, 28)
        labels = torch.from_numpy(dm.splits["train"].labels)
        generator = torch.Generator().manual_seed(42)
        # configs/cnn.yaml's net, laid out as zoo lays out conv nets
        self.net = CNN(10, 1, (32, 64, 128), dropout=0.0, head_dropout=0.1).to(
            memory_format=torch.channels_last
        )
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=0.001, weight_decay=0.01)
        self.loader = DataLoader(TensorDataset(images, labels), batch_size=BATCH, shuffle=True, drop_last=True,
                                 num_workers=1, persistent_workers=True, generator=generator)  # fmt: skip

    def epoch(self) -> float:
        """Train one epoch; its seconds."""
        self.net.train()
        start = time.perf_counter()
        for x, y in self.loader:
            x = ((x.float() / 255 - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)
            loss = torch.nn.functional.cross_entropy(self.net(x), y, label_smoothing=0.05)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - start


class Turns(L.Callback):
    """Times each zoo epoch, and runs one epoch of the plain loop before it, in the same process."""

    result: dict | None = None  # both sides' epoch times, read back by `run_once` after `zoo fit` returns

    def __init__(self) -> None:
        self.plain_loop: PlainLoop | None = None
        self.started: float | None = None
        self.wandb_cpu = 0.0
        self.zoo: list[float] = []  # seconds of each zoo epoch
        self.plain: list[float] = []  # seconds of the plain epoch run just before it
        self.zoo_steal: list[float] = []  # CPU seconds the hypervisor took from this VM in each zoo epoch
        self.plain_steal: list[float] = []  # and in each plain epoch
        self.steal_mark = 0.0

    def _close(self) -> None:
        if self.started is not None:
            self.zoo.append(time.perf_counter() - self.started)
            self.zoo_steal.append(_steal_seconds() - self.steal_mark)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._close()
        if self.plain_loop is None:
            self.plain_loop = PlainLoop()
            self.wandb_cpu = _cpu_seconds_of("wandb")  # W&B's service and system monitor
        before = _steal_seconds()
        self.plain.append(self.plain_loop.epoch())
        self.steal_mark = _steal_seconds()
        self.plain_steal.append(self.steal_mark - before)
        self.started = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self._close()
        wandb_cpu = _cpu_seconds_of("wandb") - self.wandb_cpu
        steps = len(self.plain_loop.loader) if self.plain_loop else 0  # the same sample and batch as zoo's
        Turns.result = {"zoo": self.zoo, "plain": self.plain, "wandb_cpu": wandb_cpu, "steps": steps,
                        "zoo_steal": self.zoo_steal, "plain_steal": self.plain_steal}  # fmt: skip


def _steal_seconds() -> float:
    """CPU seconds, over all CPUs, that the hypervisor has given to other machines (/proc/stat's steal)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()  # cpu user nice system idle iowait irq softirq steal ...
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def _cpu_seconds_of(name: str) -> float:
    """CPU seconds (user + system) used so far by the processes whose command name starts with `name`."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if comm.startswith(name):
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run_once(epochs: int, warmup: int = WARMUP) -> dict:
    from benchmarks.loop_overhead import (
        Turns as T,
    )  # the class zoo loads, also when this file runs as __main__
    from zoo.cli import main as zoo_main

    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    T.result = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            code = zoo_main(["fit", "--config", str(CONFIG), "--data.augment", "none", "--data.hflip", "false",
                             "--data.num_workers", "1", "--data.batch_size", str(BATCH),
                             "--model.scheduler", "constant", "--model.lr", "0.001",
                             "--trainer.max_epochs", str(epochs), "--trainer.limit_val_batches", "0",
                             "--trainer.num_sanity_val_steps", "0",
                             "--trainer.callbacks+=benchmarks.loop_overhead.Turns", "--runs_dir", tmp])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    result = {"code": code, **(T.result or {})}
    if result["code"] != 0 or len(result["zoo"]) != epochs:
        raise SystemExit(f"zoo fit failed (exit {result['code']}); run it alone to see why")
    zoo_s, plain_s = result["zoo"][warmup:], result["plain"][warmup:]
    pairs = [p / z for p, z in zip(plain_s, zoo_s, strict=True)]
    q = statistics.quantiles(pairs, n=4)
    return {
        "ratio": sum(plain_s) / sum(zoo_s),
        "median_pair_ratio": statistics.median(pairs),
        "pair_ratio_iqr": [q[0], q[2]],
        "steps_per_epoch": result["steps"],
        "zoo_ms_per_step": 1000 * statistics.median(zoo_s) / result["steps"],
        "plain_ms_per_step": 1000 * statistics.median(plain_s) / result["steps"],
        "wandb_service_cpu_share": result["wandb_cpu"] / sum(result["zoo"]),
        # VM steal during each side's turns, as a share of that side's time: a stall with steal is the VM's
        "zoo_steal_share": sum(result["zoo_steal"][warmup:]) / sum(zoo_s),
        "plain_steal_share": sum(result["plain_steal"][warmup:]) / sum(plain_s),
        "zoo_epoch_s": result["zoo"],
        "plain_epoch_s": result["plain"],
        "zoo_steal_s": result["zoo_steal"],
        "plain_steal_s": result["plain_steal"],
    }


def main(epochs: int, runs: int) -> dict:
    if epochs <= WARMUP + 4:
        raise SystemExit(f"--epochs must be above {WARMUP + 4}: the first {WARMUP} pairs are warm-up")
    results = [run_once(epochs) for _ in range(runs)]
    ratios = [r["ratio"] for r in results]
    return {
        "machine": describe(), "epochs": epochs, "steps_per_epoch": results[0]["steps_per_epoch"], "batch_size": BATCH, "warmup_pairs": WARMUP,
        "runs": results, "ratios": ratios, "ratio": statistics.median(ratios),
        "runs_agree_within": max(ratios) / min(ratios) - 1,
    }  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--out", default="loop_overhead.json", help="file name in benchmarks/results/")
    a = parser.parse_args()
    out = main(a.epochs, a.runs)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / a.out).write_text(json.dumps(out, indent=1) + "\n")
    for i, r in enumerate(out["runs"], 1):
        print(f"run {i}: zoo fit at {r['ratio']:.3f} of the plain loop's speed ({r['zoo_ms_per_step']:.1f} vs "
              f"{r['plain_ms_per_step']:.1f} ms a step; pairs' IQR {r['pair_ratio_iqr'][0]:.3f}-"
              f"{r['pair_ratio_iqr'][1]:.3f}); W&B service CPU {100 * r['wandb_service_cpu_share']:.1f} % of zoo's time; "
              f"VM steal {100 * r['zoo_steal_share']:.1f} % of zoo's and {100 * r['plain_steal_share']:.1f} % of the "
              "plain loop's time")  # fmt: skip
    print(f"runs agree within {100 * out['runs_agree_within']:.1f} % (goal: >= 0.97, runs within 3 %)")
