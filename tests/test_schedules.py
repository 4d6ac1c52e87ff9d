"""The course's LR schedules: the lr each step gets, through the CLI, plateau's state and one-cycle's stretch across a resume."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.conftest import FAST, make_folder, only_run_dir
from zoo.cli import main
from zoo.schedules import ScheduleConfig, lr_factor

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PER_EPOCH, TOTAL = 10, 100


def factors(**kw) -> list[float]:
    cfg = ScheduleConfig(**kw)
    return [lr_factor(step, cfg, PER_EPOCH, TOTAL) for step in range(TOTAL)]


def test_step_decay_halves_every_five_epochs():
    f = factors(scheduler="step", step_size=5, gamma=0.5)
    assert f[0] == f[49] == 1.0 and f[50] == f[99] == 0.5


def test_multistep_exponential_polynomial_constant():
    f = factors(scheduler="multistep", milestones=[2, 7], gamma=0.1)
    assert f[19] == 1.0 and f[20] == pytest.approx(0.1) and f[70] == pytest.approx(0.01)
    f = factors(scheduler="exponential", gamma=0.9)
    assert f[9] == 1.0 and f[10] == pytest.approx(0.9) and f[95] == pytest.approx(0.9**9)
    f = factors(scheduler="polynomial", power=2.0)
    assert f[0] == 1.0 and f[50] == pytest.approx(0.25) and f[-1] < 1e-3
    assert set(factors(scheduler="constant")) == {1.0}


def test_warmup_on_any_schedule():
    f = factors(scheduler="step", step_size=5, gamma=0.5, warmup_epochs=2)
    assert f[0] == pytest.approx(1 / 25) and f[10] < f[19] < 1.0 and f[20] == 1.0 and f[50] == 0.5
    f = factors(scheduler="onecycle", warmup_pct=0.3)
    assert f[0] == pytest.approx(1 / 25) and max(f) == pytest.approx(f[30]) and f[-1] < 1e-3


def read_lrs(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("lr-AdamW/pg1")]
    return [float(r["lr-AdamW/pg1"]) for r in rows]


def test_step_schedule_through_the_cli(run_zoo, image_folder):
    rc, runs = run_zoo("fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, *FAST,
                       "--trainer.max_epochs", 3, "--model.scheduler", "step", "--model.step_size", 1,
                       "--model.gamma", 0.5, "--model.lr", 0.01, "--trainer.logger", "CSVLogger")  # fmt: skip
    assert rc == 0
    lrs = read_lrs(next((runs / "cnn").iterdir()))
    assert [round(x, 6) for x in lrs] == [0.01, 0.005, 0.0025]  # one step an epoch, halved each epoch


def test_plateau_runs_on_val_loss_and_its_state_survives_resume(run_zoo, image_folder):
    args = ["fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, *FAST, "--model.scheduler",
            "plateau", "--model.plateau_patience", 0, "--model.plateau_factor", 0.5, "--model.lr", 0.01,
            "--model.min_lr", 0.004, "--trainer.logger", "false"]  # fmt: skip
    rc, runs = run_zoo(*args, "--trainer.max_epochs", 3)
    assert rc == 0
    last = sorted((runs / "cnn").iterdir())[-1] / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False)
    saved = ckpt["lr_schedulers"][0]
    assert {"best", "num_bad_epochs", "patience"} <= set(saved) and saved["patience"] == 0
    assert saved["factor"] == 0.5 and saved["min_lrs"] == [0.004, 0.004]  # both parameter groups
    lrs = [g["lr"] for g in ckpt["optimizer_states"][0]["param_groups"]]
    assert lrs == saved["_last_lr"]  # what the optimiser trains with: 0.01 halved per stalled epoch, >= 0.004
    assert lrs[0] in [pytest.approx(max(0.01 * 0.5**cuts, 0.004)) for cuts in range(4)]
    # stepped once per epoch *before* last.ckpt is written: 3 epochs, 3 steps (Lightning's order gives 2)
    assert saved["last_epoch"] == 3
    assert run_zoo(*args, "--trainer.max_epochs", 4, "--ckpt_path", last)[0] == 0
    resumed = torch.load(
        sorted((runs / "cnn").iterdir())[-1] / "checkpoints" / "last.ckpt", weights_only=False
    )
    state = resumed["lr_schedulers"][0]
    assert state["best"] <= saved["best"] < float("inf")  # the best val/loss carried over, not reset
    assert state["last_epoch"] == 4  # the resumed epoch's step on top of the saved three: none lost


def test_plateau_refuses_warmup(run_zoo, image_folder, capsys):
    rc, _ = run_zoo("fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, *FAST,
                    "--model.scheduler", "plateau", "--model.warmup_epochs", 1)  # fmt: skip
    assert rc == 2 and "does not combine" in capsys.readouterr().err


class StepLrProbe(L.Callback):
    """Records {global step: the lr of every parameter group} as each training step starts; writes it to `out`
    (JSON) when training ends."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.lrs: dict[int, list[float]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs[trainer.global_step] = [g["lr"] for g in trainer.optimizers[0].param_groups]

    def on_train_end(self, trainer, pl_module) -> None:
        with open(self.out, "w") as f:
            json.dump(self.lrs, f)


# 24 training images in batches of 8: 3 steps an epoch. The lr is a round number so factors read off it.
LR, STEPS_PER_EPOCH = 0.01, 3
TINY = ["--model.channels_per_block", "[8, 16]", "--data.batch_size", 8, "--model.lr", LR,
        "--trainer.logger", "false"]  # fmt: skip


def fit_lrs(run, image_folder: Path, out: Path, *args) -> dict[int, list[float]]:
    """`zoo fit` a tiny CNN with StepLrProbe; returns each step's lr per parameter group."""
    rc, _ = run("fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, *FAST, *TINY,
                "--trainer.callbacks+=tests.test_schedules.StepLrProbe", "--trainer.callbacks.out", out, *args)  # fmt: skip
    assert rc == 0
    return {int(step): lrs for step, lrs in json.loads(out.read_text()).items()}


def assert_follows(lrs: dict[int, list[float]], expected: dict[int, float]) -> None:
    """Every parameter group's lr at each step, in order, is LR times the expected factor."""
    assert sorted(lrs) == sorted(expected)
    for step in sorted(expected):
        assert lrs[step] == [pytest.approx(LR * expected[step], rel=1e-6, abs=1e-12)] * len(lrs[step]), step


# The shapes as README and the docstrings state them, written out here rather than taken from zoo.schedules.
def half_cosine(frac: float) -> float:
    """1 at frac=0 down to 0 at frac=1."""
    return 0.5 * (1 + math.cos(math.pi * frac))


def cosine_expected(warmup: int, total: int) -> dict[int, float]:
    """Linear warm-up to 1 (reached on the warm-up's last step), then cosine decay to 0 over the remaining steps."""
    return {
        t: (t + 1) / warmup if t < warmup else half_cosine((t - warmup) / (total - warmup))
        for t in range(total)
    }


def onecycle_expected(warmup: int, total: int, steps) -> dict[int, float]:
    """Cosine up from 1/25 to 1 over the warm-up, then cosine down to 1/25e4 at the last step."""
    start, end = 1 / 25, 1 / 25e4
    return {
        t: 1 - (1 - start) * half_cosine(t / warmup) if t < warmup
        else end + (1 - end) * half_cosine((t - warmup) / (total - warmup))
        for t in steps
    }  # fmt: skip


@pytest.mark.parametrize("warmup_pct", [0.25, 0.0])  # 0: no warm-up step at all, a plain cosine
def test_cosine_through_the_cli_step_by_step(run_zoo, image_folder, tmp_path, warmup_pct):
    lrs = fit_lrs(run_zoo, image_folder, tmp_path / "lrs.json", "--trainer.max_epochs", 3,
                  "--model.scheduler", "cosine", "--model.warmup_pct", warmup_pct)  # fmt: skip
    total = 3 * STEPS_PER_EPOCH  # 9 steps; warm-up over int(9 * 0.25) = 2 of them, or none
    expected = cosine_expected(2, total) if warmup_pct else {t: half_cosine(t / total) for t in range(total)}
    assert_follows(lrs, expected)


def test_constant_with_warmup_ramps_then_holds(run_zoo, image_folder, tmp_path):
    lrs = fit_lrs(run_zoo, image_folder, tmp_path / "lrs.json", "--trainer.max_epochs", 2,
                  "--model.scheduler", "constant", "--model.warmup_epochs", 1)  # fmt: skip
    warmup = STEPS_PER_EPOCH  # one epoch: linear from 1/25 (as one-cycle starts) towards 1, then 1
    assert_follows(lrs, {t: 1 / 25 + (1 - 1 / 25) * t / warmup if t < warmup else 1.0 for t in range(6)})


def test_onecycle_through_the_cli_step_by_step(run_zoo, image_folder, tmp_path):
    # onecycle is cnn.yaml's schedule; 9 steps, warm-up int(9 * 0.25) = 2
    lrs = fit_lrs(
        run_zoo, image_folder, tmp_path / "lrs.json", "--trainer.max_epochs", 3, "--model.warmup_pct", 0.25
    )
    assert_follows(lrs, onecycle_expected(2, 9, range(9)))


@pytest.fixture(scope="module")
def stretched_resume(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """A one-cycle run of 1 epoch, resumed from its last.ckpt with --trainer.max_epochs 3: each run's step lrs."""
    root = tmp_path_factory.mktemp("resume")
    images = make_folder(root / "images")
    cwd = os.getcwd()
    os.chdir(root)

    def run(*args) -> tuple[int, Path]:
        return main([str(a) for a in args]), root / "runs"

    try:
        first = fit_lrs(run, images, root / "first.json", "--trainer.max_epochs", 1)
        last = only_run_dir(root / "runs", "cnn") / "checkpoints" / "last.ckpt"
        resumed = fit_lrs(run, images, root / "resumed.json", "--trainer.max_epochs", 3, "--ckpt_path", last)
    finally:
        os.chdir(cwd)
    return first, resumed


def test_resumed_onecycle_stretches_to_the_new_max_epochs(stretched_resume):
    first, resumed = stretched_resume
    assert_follows(first, onecycle_expected(1, 3, range(3)))  # 3 steps, warm-up max(1, int(3 * 0.25)) = 1
    # README: "--trainer.max_epochs may be raised on resume: the one-cycle schedule stretches to the new
    # length": from the first resumed step on (not the old cycle's last lr, saved in the optimiser's state),
    # each step's lr is the 9-step schedule's (warm-up 2) at that step.
    assert sorted(resumed) == list(range(3, 9))
    assert_follows(resumed, onecycle_expected(2, 9, range(3, 9)))
