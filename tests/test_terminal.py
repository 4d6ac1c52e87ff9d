"""What `zoo` prints: a short help, a quiet run with epoch lines and a summary, checkpoints that evaluate alone."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from tests.conftest import make_folder
from zoo.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_zoo_help_starts_fast_and_fit_help_is_one_screen():
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and time.perf_counter() - start < 2.0  # the interpreter itself takes ~0.05 s
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "fit", "--help"], capture_output=True, text=True, timeout=60
    )
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) < 45
    assert any(ln.strip().startswith("--data.root PATH") for ln in lines)
    assert any(ln.strip().startswith("finetune.yaml") for ln in lines) and "zoo fit --help-all" in proc.stdout


def test_fit_prints_epoch_lines_and_a_summary_and_nothing_else(tmp_path):
    """The console script in a pipe (as in CI or `> log`): no progress bar, no warnings, no Lightning chatter."""
    images = make_folder(tmp_path / "images", n=60)
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "fit", "--config", str(CONFIGS / "cnn.yaml"), "--data.root", str(images),
         "--trainer.max_epochs", "2", "--data.num_workers", "0", "--data.batch_size", "4"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # stdout is for results (JSON, numbers); a fit has none
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("data: 3 channels (RGB), 16 px, from the images in")
    assert lines[1].startswith("fit CNN (") and "3 classes, 144 train, 36 val images at 16 px" in lines[1]
    assert lines[2] == "2 epochs on cpu (32-true), writing to runs/cnn/version_0"
    assert lines[3].startswith("epoch 1/2  loss ") and "val/acc" in lines[3] and "ETA" in lines[3]
    assert lines[4].startswith("epoch 2/2  loss ")
    assert lines[5].startswith("done in ") and "training images/s" in lines[5]
    assert lines[6].startswith("best epoch ") and "val/acc" in lines[6]
    run = "runs/cnn/version_0"
    assert f"{run}/checkpoints/best.ckpt" in proc.stderr
    assert f"zoo predict --checkpoint {run}/checkpoints/best.ckpt" in proc.stderr
    assert f"zoo app --checkpoint {run}/checkpoints/best.ckpt" in proc.stderr
    assert lines[-1].startswith("W&B offline run saved in ")
    for noise in (
        "Seed set",
        "GPU available",
        "Tip",
        "Warning",
        "warn",
        "anonymous",
        "LeafSpec",
        "MaxMetric",
    ):
        assert noise not in proc.stderr, noise
    # 36 steps an epoch of a few ms each: the train loss is logged every 5 steps until 6 steps are timed, then
    # about a second of training apart, and at most 50 steps apart (Lightning's default)
    with open(tmp_path / run / "metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]
    gaps = [b - a for a, b in zip(steps, steps[1:], strict=False)]
    assert steps[0] == 4 and len(steps) >= 2 and all(5 <= gap <= 50 for gap in gaps), steps
    # config.yaml records what the images gave, so the run reruns as it ran
    config = (tmp_path / run / "config.yaml").read_text()
    assert "image_size: 16" in config and "channels: 3" in config


def test_validate_and_test_take_the_runs_settings_from_the_checkpoint(
    trained_ckpt, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--ckpt_path", str(trained_ckpt), "--trainer.logger", "false"]) == 0
    out = capsys.readouterr()
    assert "settings from" in out.err and "val/acc" in out.out and "val/acc_best" not in out.out
    assert main(["validate", "--trainer.logger", "false"]) == 2
    assert "pass --ckpt_path" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing written: no empty run folders


def test_predictions_keep_accented_class_names_readable(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    images = make_folder(tmp_path / "images", classes=("café", "crème"), n=8)
    assert main(["fit", "--config", str(CONFIGS / "mlp.yaml"), "--data.root", str(images), "--trainer.max_epochs", "1",
                 "--trainer.logger", "false", "--data.num_workers", "0"]) == 0  # fmt: skip
    ckpt = next(Path("runs").rglob("best.ckpt"))
    capsys.readouterr()
    Image.new("RGB", (16, 16)).save(tmp_path / "x.png")
    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "x.png")]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["label"] in ("café", "crème")
    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "x.png"), "--output", "p.jsonl"]) == 0
    assert "caf\\u00e9" not in Path("p.jsonl").read_text(encoding="utf-8")


def test_lr_find_writes_its_plot_and_no_wandb_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    images = make_folder(tmp_path / "images", n=40)
    assert main(["lr-find", "--config", str(CONFIGS / "cnn.yaml"), "--data.root", str(images),
                 "--data.num_workers", "0"]) == 0  # fmt: skip
    run = next(Path("runs/cnn").iterdir())
    assert (run / "lr_find.png").is_file() and not (run / "wandb").exists()
    assert "Finding best initial lr" not in capsys.readouterr().err  # no tqdm bar in a log


def test_checkpointing_off_trains_without_checkpoints(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    images = make_folder(tmp_path / "images", n=8)
    rc = main(["fit", "--config", str(CONFIGS / "cnn.yaml"), "--data.root", str(images), "--trainer.max_epochs", "1",
               "--trainer.enable_checkpointing", "false", "--trainer.logger", "false", "--data.num_workers", "0"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0 and "best epoch 1" in err and "best checkpoint" not in err
    assert not list(Path("runs").rglob("*.ckpt"))
