"""The LR finder: `zoo lr-find`, `zoo fit --lr_find true` / `--model.lr auto`, weights untouched."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import only_run_dir
from zoo.lightning_cli import ZooCLI
from zoo.lr_find import find_lr, smooth, suggest_lr

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE = ["--config", CONFIGS / "cnn.yaml", "--data.num_workers", 0, "--trainer.logger", "false",
        "--trainer.enable_model_summary", "false"]  # fmt: skip


def test_suggestion_is_the_steepest_descent_in_log_lr():
    lrs = np.logspace(-6, 0, 100)
    # flat, a descent centred at 1e-3, then divergence: the steepest point is ~1e-3
    loss = 2.0 - 1.0 / (1 + np.exp(-(np.log10(lrs) + 3) * 3)) + np.where(lrs > 0.1, (lrs - 0.1) * 20, 0)
    assert 5e-4 < suggest_lr(lrs, smooth(list(loss))) < 2e-3
    assert suggest_lr(lrs[:5], smooth(list(loss[:5]))) is None


def test_zoo_lr_find_prints_the_lr_and_saves_plot_and_curve(run_zoo, capsys):
    rc, runs = run_zoo("lr-find", *BASE)
    assert rc == 0
    printed = float(capsys.readouterr().out.strip().splitlines()[-1])
    run_dir = only_run_dir(runs, "cnn")
    data = json.loads((run_dir / "lr_find.json").read_text())
    assert data["suggestion"] == pytest.approx(printed, rel=1e-5) and 1e-6 < printed < 1
    assert len(data["lr"]) == len(data["loss"]) >= 50
    assert (run_dir / "lr_find.png").stat().st_size > 10_000


def test_finder_leaves_the_weights_as_they_were(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = ZooCLI(args=[str(a) for a in BASE], run=False)
    before = {k: v.clone() for k, v in cli.model.state_dict().items()}
    suggestion = find_lr(cli.trainer, cli.model, cli.datamodule, tmp_path / "out")
    assert suggestion is not None and cli.model.lr == suggestion
    after = cli.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fit_with_lr_auto_trains_with_the_suggested_lr(run_zoo, tmp_path, capsys):
    out = tmp_path / "lr.json"
    rc, runs = run_zoo(
        "fit", *BASE, "--model.lr", "auto", "--trainer.max_epochs", 1,
        "--trainer.callbacks+=tests.helpers.LrProbe", f"--trainer.callbacks.out={out}",
    )  # fmt: skip
    assert rc == 0
    # stdout is not a terminal here: no progress bar, before or after the finder re-enables its callbacks
    assert capsys.readouterr().out == ""
    run_dir = only_run_dir(runs, "cnn")
    suggestion = json.loads((run_dir / "lr_find.json").read_text())["suggestion"]
    used = json.loads(out.read_text())
    assert used["model_lr"] == suggestion
    assert max(used["base_lrs"]) == suggestion  # the optimizer really got it
    assert (run_dir / "lr_find.png").is_file()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["lr"] == "auto"  # what the user asked for stays in the record


def test_fit_lr_find_flag(run_zoo, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the CSV logger alone
    probe = tmp_path / "steps.json"
    # batch 4: 250 steps an epoch, so the 100-step sweep ends inside epoch 0, the epoch the fit then trains
    rc, runs = run_zoo("fit", *BASE, "--lr_find", "true", "--trainer.max_epochs", 1, "--trainer.logger", "true",
                       "--data.batch_size", 4, "--trainer.callbacks+=tests.helpers.StepLossProbe",
                       "--trainer.callbacks.out", probe, "--trainer.callbacks+=tests.helpers.LrProbe",
                       "--trainer.callbacks.out", tmp_path / "lr.json")  # fmt: skip
    assert rc == 0
    run_dir = only_run_dir(runs, "cnn")
    suggestion = json.loads((run_dir / "lr_find.json").read_text())["suggestion"]
    used = json.loads((tmp_path / "lr.json").read_text())  # the fit's first step, after the sweep's
    # it trains with the finder's lr
    assert used["model_lr"] == suggestion and max(used["base_lrs"]) == suggestion
    fit_epoch = json.loads(probe.read_text())[-1]  # the finder's sweep came first, on the same trainer
    with open(run_dir / "metrics.csv") as f:
        logged = [float(r["train/loss_epoch"]) for r in csv.DictReader(f) if r.get("train/loss_epoch")]
    mean = sum(loss * n for loss, n in fit_epoch) / sum(n for _, n in fit_epoch)
    assert logged == [pytest.approx(mean, rel=1e-5)]  # the epoch's mean leaves out the sweep's steps
