"""Several processes (DDP over gloo on the CPU): one run folder, each line printed once, global metrics."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_folder

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250", "WANDB_MODE": "offline"}


def last_val_acc(metrics: Path) -> float:
    with open(metrics) as f:
        return [float(r["val/acc"]) for r in csv.DictReader(f) if r.get("val/acc")][-1]


@pytest.mark.slow
def test_two_process_ddp_trains_once_and_its_val_acc_is_one_process_val_acc(tmp_path, run_zoo):
    make_folder(
        tmp_path / "images", n=11
    )  # 33 images: 7 for validation, which 2 processes cannot split evenly
    fit = [sys.executable, "-m", "zoo.cli", "fit", "--config", str(ROOT / "configs" / "cnn.yaml"),
           "--data.root", "images", "--data.image_size", "16", "--data.batch_size", "4", "--data.num_workers", "0",
           "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
           "--trainer.strategy", "ddp", "--trainer.callbacks+=tests.helpers.StepLossProbe",
           "--trainer.callbacks.out", str(tmp_path / "steps.json")]  # fmt: skip
    proc = subprocess.run(fit, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "Traceback" not in err and "sync_dist" not in err and "Grad strides" not in err, err
    for line in ("fit CNN", "epoch 1/1", "done in", "best checkpoint"):
        assert sum(ln.startswith(line) for ln in err.splitlines()) == 1, f"{line!r} not printed once:\n{err}"
    runs = tmp_path / "runs" / "cnn"
    assert [p.name for p in runs.iterdir()] == ["version_0"]  # one run folder, made by rank 0
    run = runs / "version_0"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # one W&B run
    with open(run / "metrics.csv") as f:  # the epoch's training means, summed over both processes' images
        train = [r for r in csv.DictReader(f) if r.get("train/acc")]
    assert len(train) == 1 and 0 <= float(train[0]["train/acc"]) <= 1
    steps = [json.loads((tmp_path / f"steps.json.rank{rank}").read_text())[0] for rank in (0, 1)]
    pooled = sum(loss * n for rank in steps for loss, n in rank) / sum(n for rank in steps for _, n in rank)
    alone = [sum(loss * n for loss, n in rank) / sum(n for _, n in rank) for rank in steps]
    assert float(train[0]["train/loss_epoch"]) == pytest.approx(pooled, rel=1e-5)  # both processes' images
    assert all(mean != pytest.approx(pooled, rel=1e-3) for mean in alone)  # not either process's own mean

    # The same checkpoint evaluated by one process on the whole validation split gives the logged val/acc.
    one = ["--trainer.devices", "1", "--trainer.strategy", "auto"]  # the run's config.yaml says 2 processes
    args = ["--ckpt_path", run / "checkpoints" / "last.ckpt", "--trainer.logger", "CSVLogger", *one]
    assert run_zoo("validate", *args)[0] == 0
    single = last_val_acc(next((run / "validate").rglob("metrics.csv")))
    assert last_val_acc(run / "metrics.csv") == pytest.approx(single, abs=1e-6)


TWO = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]


def test_the_finders_run_on_one_process_and_fit_says_how_to_use_them_with_several(
    run_zoo, image_folder, capsys
):
    args = ["--config", ROOT / "configs" / "cnn.yaml", "--data.root", image_folder, "--data.num_workers", 0,
            "--trainer.logger", "false", *TWO]  # fmt: skip
    capsys.readouterr()
    # In-process: had these started a second process, Lightning's launcher would have re-run pytest.
    assert run_zoo("lr-find", *args)[0] == 0
    assert float(capsys.readouterr().out.strip()) > 0
    assert run_zoo("batch-size-find", *args, "--max_batch_size", 16)[0] == 0
    assert "batch-size finder:" in capsys.readouterr().err
    assert run_zoo("fit", *args, "--lr_find", "true")[0] == 2
    assert "the LR finder runs on one process" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_starts_the_processes_and_zoo_still_makes_one_run(tmp_path):
    """An external launcher: no process inherits rank 0's run folder, so the others learn it by broadcast."""
    make_folder(tmp_path / "images", n=8)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-port", str(free_port()), "-m", "zoo.cli", "fit", "--config", str(ROOT / "configs" / "cnn.yaml"),
           "--data.root", "images", "--data.image_size", "16", "--data.batch_size", "4", "--data.num_workers", "0",
           "--trainer.max_epochs", "1", "--trainer.logger", "CSVLogger", *TWO]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sum(ln.startswith("epoch 1/1") for ln in proc.stderr.splitlines()) == 1, proc.stderr
    runs = tmp_path / "runs" / "cnn"
    assert [p.name for p in runs.iterdir()] == ["version_0"]  # no placeholder folder of rank 1
    assert sorted(p.name for p in (runs / "version_0" / "checkpoints").iterdir()) == [
        "best.ckpt",
        "last.ckpt",
    ]
    assert (runs / "version_0" / "config.yaml").is_file() and (runs / "version_0" / "metrics.csv").is_file()


@pytest.mark.parametrize("script", ["slurm.sbatch", "torchrun.sh"])
def test_the_multi_node_examples_parse(script, run_zoo, capsys, monkeypatch):
    """The zoo command of each launcher script, with its variables filled in, is a valid configuration."""
    text = (ROOT / "examples" / script).read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if "zoo" in ln and " fit " in ln and not ln.startswith("#"))
    args = shlex.split(line[line.index(" fit ") + 1 :])
    values = {"SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS_PER_NODE": "4", "NNODES": "2", "GPUS": "4",
              "DATA": str(ROOT / "datamodules" / "samples" / "fashion_mnist_small")}  # fmt: skip
    args = [re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], a) for a in args]
    monkeypatch.chdir(ROOT)  # the scripts run from the project folder
    capsys.readouterr()
    assert run_zoo(*args, "--print_config")[0] == 0
    config = capsys.readouterr().out
    for expected in (
        "strategy: ddp",
        "num_nodes: 2",
        "devices: '4'",
        "sync_batchnorm: true",
        "accelerator: gpu",
    ):
        assert expected in config, config


@pytest.mark.parametrize(
    ("cuda", "bf16", "expected"),
    [(False, False, "32-true"), (True, True, "bf16-mixed"), (True, False, "16-mixed")],
)
def test_default_precision_per_device(cuda, bf16, expected, monkeypatch):
    import torch

    from zoo.runs import default_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert default_precision() == expected


def test_a_cpu_fit_trains_in_full_precision_by_default(run_zoo, image_folder, capsys):
    args = ["fit", "--config", ROOT / "configs" / "cnn.yaml", "--data.root", image_folder, "--data.num_workers", 0,
            "--trainer.max_epochs", 1, "--trainer.logger", "false"]  # fmt: skip
    capsys.readouterr()
    assert run_zoo(*args)[0] == 0
    assert "on cpu (32-true)" in capsys.readouterr().err
