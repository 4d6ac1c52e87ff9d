"""What `zoo fit` tells the user: a header, one line per epoch with the whole run's ETA, a closing summary.

The lines go to stderr through zoo's console, so they read the same in a terminal (above Lightning's
progress bar), in a log file and in CI, where a progress bar would only print control characters.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException

from zoo.console import console
from zoo.errors import Diverged

# Exit codes of runs stopped in this process: 130 after Ctrl-C, 143 after SIGTERM (`docker stop`, a preempted
# cloud machine, Kubernetes), as the shell reports a process those signals end.
INTERRUPTED: list[int] = []

LOG_SECONDS = 1.0  # adapted logging: about this much training between two logged steps


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _fmt_count(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else (f"{n / 1e3:.0f} K" if n >= 1e3 else str(n))


def _value(metrics: dict[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if isinstance(value, (torch.Tensor, float, int)) else None


class RunReport(L.Callback):
    """Prints the run header, an epoch line after each validation, and the summary when fitting ends.

    Args:
        run_dir: the run folder, named in the summary with the files the run wrote.
        config_path: the run's config.yaml, used in the printed resume command.
        adapt_logging: set the trainer's log_every_n_steps from the epoch's length and the step's time.
    """

    def __init__(self, run_dir: Path, config_path: Path | None = None, adapt_logging: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.adapt_logging = adapt_logging
        self.step_seconds: list[float] | None = None  # see on_train_start
        self.step_start = 0.0
        self.config_path = config_path
        self.history: list[dict[str, float | None]] = []
        self.fit_start = self.epoch_start = self.train_seconds = 0.0
        self.train_images = self.epoch_images = 0
        self.train_end: float | None = None
        self.best_before_resume: float | None = None  # val/acc_best restored from the checkpoint

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Every process of a multi-process run names rank 0's run folder (others may hold a placeholder).
        self.run_dir = Path(trainer.strategy.broadcast(str(self.run_dir)))
        if self.config_path is not None:
            self.config_path = self.run_dir / self.config_path.name

    # --- header ------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_start = time.perf_counter()
        data = trainer.datamodule
        sizes = {name: len(split.labels) for name, split in getattr(data, "splits", {}).items()}
        params = sum(p.numel() for p in pl_module.parameters())
        images = ", ".join(f"{n:,} {name}" for name, n in sizes.items()) or "streamed"  # shards: no count
        console.print(
            f"[bold]fit[/] {type(pl_module.net).__name__} ({_fmt_count(params)} parameters): "
            f"{len(pl_module.hparams['class_names'])} classes, {images} images at {pl_module.hparams['image_size']} px"
        )
        console.print(
            f"{_epochs(trainer)} on {trainer.strategy.root_device.type} ({trainer.precision}), writing to {self.run_dir}"
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """log_every_n_steps left unset: about 10 points per epoch, so a small data set still draws a curve, but
        at least 5 steps apart, and once the first steps are timed, about a second apart (at most 50 steps,
        Lightning's default). Logging (W&B, CSV, the LR monitor) costs about 4 ms a time on 2 CPU cores; every
        step of a short epoch cost 8 % of the training speed (benchmarks/loop_overhead.py)."""
        self.epoch_start = time.perf_counter()  # a run resumed mid-epoch gets no on_train_epoch_start
        if trainer.ckpt_path:
            best = getattr(pl_module, "val_acc_best", None)
            value = float(best.max_value) if best is not None else float("-inf")  # restored with the model
            self.best_before_resume = value if math.isfinite(value) else None
            console.print(
                f"resuming {trainer.ckpt_path} at epoch {trainer.current_epoch + 1}, step {trainer.global_step}"
            )
        if self.adapt_logging:
            trainer.log_every_n_steps = max(5, min(50, int(trainer.num_training_batches) // 10))
            self.step_seconds = []  # the first steps' times, until the interval is set from them

    # --- per epoch ---------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_start = time.perf_counter()
        self.epoch_images = 0
        self.train_end = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, idx: int) -> None:
        self.step_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.epoch_images += len(batch[1])  # (images, labels)
        if self.step_seconds is not None:
            self._time_logging(trainer, time.perf_counter() - self.step_start)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss):  # one sync a step: free on CPU, ~µs on a GPU
            last = self.run_dir / "checkpoints" / "last.ckpt"
            saved = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was saved yet"
            lr = getattr(pl_module, "lr", None)
            lower = f" (e.g. --model.lr {float(lr) / 10:.2g})" if isinstance(lr, (int, float)) else ""
            raise Diverged(
                f"the training loss became {float(loss)} at epoch {trainer.current_epoch + 1}, step "
                f"{trainer.global_step}; {saved}; lower the learning rate{lower} or train in fp32 "
                "(--trainer.precision 32-true)"
            )

    def _time_logging(self, trainer: L.Trainer, seconds: float) -> None:
        """After 6 steps: log about every LOG_SECONDS of training, if that is further apart than set."""
        self.step_seconds.append(seconds)
        if len(self.step_seconds) < 6:
            return
        step = statistics.median(self.step_seconds[1:])  # the first step also warms up
        every = min(50, max(trainer.log_every_n_steps, math.ceil(LOG_SECONDS / max(step, 1e-6))))
        # Rank 0's timing for all processes: they log on the same steps.
        trainer.log_every_n_steps = int(trainer.strategy.broadcast(every))
        self.step_seconds = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self.train_end is None:
            self.train_end = time.perf_counter()  # the epoch's training part ends where validation starts

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.perf_counter()
        train_end = self.train_end or now
        self.train_seconds += train_end - self.epoch_start
        self.train_images += self.epoch_images
        metrics = trainer.callback_metrics
        keys = ("train/loss_epoch", "val/loss", "val/acc", "val/f1", "val/acc_top5")
        row = {key: _value(metrics, key) for key in keys}
        # ImageClassifier logs the epoch's training loss in its own on_train_epoch_end, which runs after this
        if hasattr(pl_module, "train_epoch_metrics"):
            row["train/loss_epoch"] = pl_module.train_epoch_metrics().get("train/loss_epoch")
        row["epoch"] = trainer.current_epoch + 1
        row["seconds"] = now - self.epoch_start
        self.history.append(row)
        line = self._epoch_line(trainer, row)
        bar = trainer.progress_bar_callback
        if isinstance(bar, EpochBar) and bar.is_enabled:
            bar.print_line(line)  # above the live bar; printing beside it would tear both lines apart
        else:
            console.print(line)

    def _epoch_line(self, trainer: L.Trainer, row: dict[str, Any]) -> str:
        parts = [f"epoch {row['epoch']}" + (f"/{trainer.max_epochs}" if _bounded(trainer) else "")]
        for key, name in (("train/loss_epoch", "loss"), ("val/loss", "val/loss"), ("val/acc", "val/acc")):
            if row.get(key) is not None:
                parts.append(f"{name} {row[key]:.3f}")
        earlier = [r["val/acc"] for r in _scored(trainer, self.history[:-1])]
        if self.best_before_resume is not None:
            earlier.append(self.best_before_resume)
        # strictly better, as best.ckpt is only replaced by a strictly better epoch
        if row.get("val/acc") is not None and row["val/acc"] > max(earlier, default=-1.0):
            parts[-1] += " (best)"
        parts.append(f"{row['seconds']:.1f} s")
        done = len(self.history)
        if _bounded(trainer) and trainer.max_epochs > trainer.current_epoch + 1 and done:
            per_epoch = sum(r["seconds"] for r in self.history) / done
            parts.append(f"ETA {_fmt_duration(per_epoch * (trainer.max_epochs - trainer.current_epoch - 1))}")
        return "  ".join(parts)

    # --- Ctrl-C --------------------------------------------------------------------------------
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # Lightning turns SIGTERM into SIGTERMException at the next batch boundary, so it is handled as Ctrl-C is
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        INTERRUPTED.append(143 if isinstance(exception, SIGTERMException) else 130)
        what = "stopped by SIGTERM" if isinstance(exception, SIGTERMException) else "interrupted"

        last = self.run_dir / "checkpoints" / "last.ckpt"
        if trainer.global_step > 0:
            # Lightning's loops record the batch reached, so the resumed run continues from here.
            trainer.save_checkpoint(last, weights_only=False)
            console.print(
                f"\n[bold yellow]{what}[/] in epoch {trainer.current_epoch + 1}, step "
                f"{trainer.global_step}; saved {last} (a resumed run finishes this epoch on freshly "
                "shuffled batches)"
            )
            console.print(f"resume with: {self.resume_command(last)}")
        elif last.is_file():
            console.print(f"\n[bold yellow]{what}[/]; resume with: {self.resume_command(last)}")
        else:
            console.print(f"\n[bold yellow]{what}[/] before the first training step; nothing to resume")

    def resume_command(self, ckpt: Path) -> str:
        config = f" --config {self.config_path}" if self.config_path else ""
        return f"zoo fit{config} --ckpt_path {ckpt}"

    # --- summary -------------------------------------------------------------------------------
    def summary(self, trainer: L.Trainer, best_path: str | None) -> None:
        """The closing lines: best epoch and its metrics, time and speed, where things are, what next."""
        elapsed = time.perf_counter() - self.fit_start
        scored = _scored(trainer, self.history)
        speed = self.train_images / self.train_seconds if self.train_seconds > 0 else math.nan
        early = trainer.should_stop and trainer.max_epochs and trainer.current_epoch < trainer.max_epochs
        console.print(
            f"[bold green]done[/] in {_fmt_duration(elapsed)}: {len(self.history)} epoch(s)"
            f"{' (stopped early: ' + _stopper(trainer) + ')' if early else ''}, {speed:,.0f} training images/s"
        )
        if scored:
            best = max(scored, key=lambda r: r["val/acc"])
            shown = "  ".join(
                f"{k} {best[k]:.4f}"
                for k in ("val/acc", "val/f1", "val/acc_top5", "val/loss")
                if best.get(k) is not None
            )
            console.print(f"[bold]best[/] epoch {best['epoch']}: {shown}")
        ckpt = _relative(Path(best_path)) if best_path else None
        if ckpt:
            console.print(f"[bold green]best checkpoint[/] {ckpt}")
        files = sorted(p.name + ("/" if p.is_dir() else "") for p in self.run_dir.iterdir())
        console.print(f"[bold]wrote[/] {self.run_dir}/: {', '.join(files)}")
        if ckpt:
            console.print("[bold]next[/]")
            for command in (
                f"zoo evaluate --checkpoint {ckpt}    # where it fails: report.html",
                f"zoo predict --checkpoint {ckpt} IMAGES_OR_FOLDERS",
                f"zoo app --checkpoint {ckpt}",
                f"zoo export --checkpoint {ckpt} --format onnx",
            ):
                console.print(f"  {command}")


def _scored(trainer: L.Trainer, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The epochs that compete for best: a callback that restarts the race (zoo.pruning.LotteryTicket's rounds)
    says from which epoch it counts."""
    since = max((getattr(c, "scored_from_epoch", 1) for c in trainer.callbacks), default=1)
    return [r for r in history if r.get("val/acc") is not None and r["epoch"] >= since]


def _stopper(trainer: L.Trainer) -> str:
    """Which callback stopped the run, e.g. "EarlyStopping on val/acc"."""
    for callback in trainer.callbacks:
        if getattr(callback, "stopped_epoch", 0):
            return f"{type(callback).__name__} on {getattr(callback, 'monitor', '?')}"
    return "a callback asked to stop"


def _relative(path: Path) -> Path:
    """A path as the user would type it from here: relative when it lies under the working folder."""
    return path.relative_to(Path.cwd()) if path.is_absolute() and path.is_relative_to(Path.cwd()) else path


class EpochBar(RichProgressBar):
    """Lightning's rich progress bar for a terminal, counting epochs as the epoch lines do (1 to N), showing
    only the training loss (the epoch lines carry the rest) and printing those lines above itself.

    Off unless stdout is a terminal: in a log file or CI a live bar prints control characters, and the
    epoch lines say what matters there.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not sys.stdout.isatty():
            self.disable()

    def enable(self) -> None:
        # Lightning's LR and batch-size finders re-enable the bar when they finish: it stays off where it was
        if sys.stdout.isatty():
            super().enable()

    def _get_train_description(self, current_epoch: int) -> str:
        total = f"/{self.trainer.max_epochs}" if _bounded(self.trainer) else ""
        return f"epoch {current_epoch + 1}{total}".ljust(len(self.validation_description))

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        return {k: v for k, v in metrics.items() if k == "train/loss"}

    def print_line(self, line: str) -> None:
        """Print through the bar's own console (private in Lightning 2.6), which owns the live display."""
        (self._console or console).print(line, highlight=False)


def _bounded(trainer: L.Trainer) -> bool:
    """max_epochs -1 (or None with max_steps) trains until max_steps or a stop: no epoch count to show."""
    return bool(trainer.max_epochs) and trainer.max_epochs > 0


def _epochs(trainer: L.Trainer) -> str:
    if _bounded(trainer):
        return f"{trainer.max_epochs} epoch{'s' if trainer.max_epochs != 1 else ''}"
    return (
        f"up to {trainer.max_steps} steps" if trainer.max_steps and trainer.max_steps > 0 else "until stopped"
    )
