"""The course's LR schedules: the lr each step gets, through the CLI, and plateau's state across a resume."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.conftest import FAST
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
    assert {round(x, 6) for x in lrs} == {0.01, 0.005, 0.0025}  # one value per epoch, halved each time


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
