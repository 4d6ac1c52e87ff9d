"""Faults of the machine and killed runs, through the `zoo` command in a real subprocess (tests/faults.py).

Each fault gets one line and a non-zero exit, nothing half-written is left looking complete, and a run killed
at any moment (mid-epoch, mid-save) resumes with `--ckpt_path last` to the same number of optimizer steps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import make_folder
from tests.faults import inject_into_saves, inject_oom

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250", "WANDB_MODE": "offline"}
CNN = ["fit", "--config", str(CONFIGS / "cnn.yaml"), "--data.root", "images", "--data.image_size", "16",
       "--data.num_workers", "0", "--data.batch_size", "8", "--trainer.logger", "false"]  # fmt: skip


def zoo(cwd: Path, *args: str, fault: str | None = None, env: dict | None = None, wait: bool = True):
    """`zoo ARGS` (or with FAULT injected) in a subprocess; (exit status, stderr) or the running process."""
    cmd = (
        [sys.executable, "-m", "tests.faults", fault, "--", *args]
        if fault
        else [sys.executable, "-m", "zoo.cli", *args]
    )
    proc = subprocess.Popen(
        cmd, cwd=cwd, env={**ENV, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if not wait:
        return proc
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("zoo: error:")]
    assert len(lines) == 1, err
    return lines[0]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def ckpt_files(runs: Path) -> list[str]:
    return sorted(p.name for p in runs.rglob("*") if ".ckpt" in p.name)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    make_folder(tmp_path / "images", n=10)
    return tmp_path


@pytest.mark.parametrize("case", ["out of memory", "disk full", "unwritable run folder", "missing package"])
def test_a_fault_of_the_machine_is_one_line_and_leaves_nothing_that_looks_complete(
    case, folder, trained_ckpt, run_zoo, monkeypatch, capsys
):
    """In-process through zoo.cli.main, the faults injected as in tests/faults.py and undone afterwards."""
    runs = folder / "runs"
    capsys.readouterr()
    if case == "out of memory":  # at the first step: no checkpoint yet, so no run folder is left either
        inject_oom(0, patch=monkeypatch.setattr)
        rc, _ = run_zoo(*CNN)
        err = capsys.readouterr().err
        assert "out of memory (DefaultCPUAllocator" in one_error_line(err)
        assert "--data.batch_size" in err and "--trainer.precision" in err
        assert not list(runs.rglob("version_*")), "a run that saved nothing is removed"
    elif case == "disk full":  # while writing the 2nd last.ckpt (epoch 3's: a run this short saves 2)
        inject_into_saves("enospc-in-save", "last.ckpt", 2, patch=monkeypatch.setattr)
        rc, _ = run_zoo(*CNN, "--trainer.max_epochs", "3")
        line = one_error_line(capsys.readouterr().err)
        assert "disk full while writing checkpoint" in line and "the previous last.ckpt is intact" in line
        last = next(runs.rglob("last.ckpt"))
        assert torch.load(last, weights_only=True)["epoch"] == 0  # epoch 1's, whole
        assert ckpt_files(runs) == ["best.ckpt", "last.ckpt"]  # no .partial left
    elif case == "unwritable run folder":
        if not Path("/sys").is_dir():
            pytest.skip("needs Linux's /sys, where nobody (root included) may create a folder")
        rc, _ = run_zoo(*CNN, "--runs_dir", "/sys/zoo-runs")
        line = one_error_line(capsys.readouterr().err)
        assert "/sys/zoo-runs; fix its permissions, or choose another --runs_dir" in line
    else:  # ONNX export needs onnxruntime to check the file it wrote
        monkeypatch.setitem(
            sys.modules, "onnxruntime", None
        )  # `import onnxruntime` fails as when not installed
        out = folder / "model.onnx"
        rc, _ = run_zoo("export", "--checkpoint", trained_ckpt, "--format", "onnx", "--output", out)
        err = capsys.readouterr().err
        assert (
            "needs the Python package 'onnxruntime'" in one_error_line(err)
            and "pip install onnxruntime" in err
        )
        assert not list(folder.glob("model.onnx*")), "an unchecked export is not left looking finished"
    assert rc == 2


@pytest.mark.slow
def test_a_kill_in_the_middle_of_a_save_keeps_the_previous_checkpoint_and_the_run_resumes(
    folder, run_zoo, capsys
):
    """The partial file lives beside the checkpoint (one rename makes it whole), never in $TMPDIR: a move from
    another filesystem, as Lightning's default does, is a copy that a kill can cut short."""
    tmpdir, marker = folder / "tmpdir", folder / "saving"
    tmpdir.mkdir()
    args = [*CNN, "--trainer.max_epochs", "3"]
    proc = zoo(folder, *args, fault="kill-in-save:last.ckpt:2", env={"FAULT_MARKER": str(marker), "TMPDIR": str(tmpdir)}, wait=False)  # fmt: skip
    wait_for(marker, proc)
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate()
    writing = Path(marker.read_text())
    last = next((folder / "runs").rglob("last.ckpt"))
    assert writing == last.with_name("last.ckpt.partial")
    assert not [p for p in tmpdir.rglob("*") if p.is_file()]  # (W&B and torch make empty folders there)
    assert torch.load(last, weights_only=True)["epoch"] == 0  # epoch 1's checkpoint, whole

    capsys.readouterr()
    assert run_zoo(*args, "--ckpt_path", "last")[0] == 0  # in-process: the resume needs no fault
    assert "resuming runs/cnn/version_0/checkpoints/last.ckpt at epoch 2" in capsys.readouterr().err
    resumed = torch.load(folder / "runs/cnn/version_1/checkpoints/last.ckpt", weights_only=True)
    assert resumed["epoch"] == 2 and resumed["global_step"] == 3 * 3  # 24 images / batch 8: 3 steps an epoch


def _state(ckpt: Path) -> dict:
    c = torch.load(ckpt, weights_only=True)
    best = next(v for k, v in c["callbacks"].items() if "'monitor': 'val/acc'" in k)
    return {
        "global_step": c["global_step"],
        "epoch": c["epoch"],
        "lr": [g["lr"] for g in c["optimizer_states"][0]["param_groups"]],
        "scheduler_step": c["lr_schedulers"][0]["last_epoch"],
        "best": float(best["best_model_score"]),
        "wandb": c.get("wandb_run_id"),
    }


@pytest.mark.slow
def test_sigkill_mid_epoch_then_ckpt_path_last_finishes_like_an_uninterrupted_run(folder, run_zoo, capsys):
    """Fine-tuning with a frozen first epoch, a one-cycle schedule and a W&B run: killed in epoch 2."""
    images = make_folder(folder / "images3", n=16)
    probe = folder / "probe.json"
    args = ["fit", "--config", str(CONFIGS / "resnet18_finetune.yaml"), "--data.root", str(images),
            "--model.backbone", "resnet10t", "--model.pretrained", "false", "--model.freeze_epochs", "1",
            "--data.image_size", "32", "--data.num_workers", "0", "--data.batch_size", "8",
            "--trainer.max_epochs", "3", "--doctor", "false"]  # fmt: skip
    assert run_zoo(*args, "--experiment", "whole")[0] == 0, (
        capsys.readouterr().err
    )  # in-process, as the resume
    whole = _state(next((folder / "runs/whole").rglob("last.ckpt")))

    marker = folder / "hung"
    hang = ["--trainer.callbacks+=tests.helpers.HangAt", f"--trainer.callbacks.marker={marker}",
            "--trainer.callbacks.epoch=1", "--trainer.callbacks.batch=2"]  # fmt: skip
    proc = zoo(folder, *args, *hang, wait=False)
    wait_for(marker, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    killed = _state(folder / "runs/resnet18_finetune/version_0/checkpoints/last.ckpt")
    assert killed["epoch"] == 0 and int(marker.read_text()) > killed["global_step"]  # killed mid-epoch 2

    freeze = ["--trainer.callbacks+=tests.helpers.FreezeProbe", f"--trainer.callbacks.out={probe}"]
    assert run_zoo(*args, *freeze, "--ckpt_path", "last")[0] == 0, capsys.readouterr().err
    resumed = _state(folder / "runs/resnet18_finetune/version_1/checkpoints/last.ckpt")
    assert resumed["global_step"] == whole["global_step"] and resumed["epoch"] == whole["epoch"] == 2
    assert resumed["scheduler_step"] == whole["scheduler_step"]  # the schedule's position...
    assert resumed["lr"] == pytest.approx(whole["lr"])  # ...and so the same final learning rates
    assert resumed["best"] >= killed["best"]  # the best score carried over
    assert resumed["wandb"] == killed["wandb"] is not None  # the same W&B run continued
    epochs = json.loads(probe.read_text())
    assert [e["epoch"] for e in epochs] == [1, 2] and all(e["requires_grad"] for e in epochs)  # unfrozen


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_exits_143_and_the_resume_ends_on_the_same_step(folder, run_zoo):
    """`docker stop`, a preempted cloud machine or Kubernetes send SIGTERM: handled like Ctrl-C."""
    marker = folder / "hung"
    args = [*CNN, "--trainer.max_epochs", "3"]
    hang = ["--trainer.callbacks+=tests.helpers.HangAt", f"--trainer.callbacks.marker={marker}",
            "--trainer.callbacks.epoch=1", "--trainer.callbacks.batch=1"]  # fmt: skip
    proc = zoo(folder, *args, *hang, wait=False)
    wait_for(marker, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM in epoch 2, step 5" in err and "Traceback" not in err, err
    assert "resume with: zoo fit" in err
    saved = torch.load(folder / "runs/cnn/version_0/checkpoints/last.ckpt", weights_only=True)
    assert saved["global_step"] == 5  # mid-epoch: Lightning stops after the batch it is in (3 + 2)

    assert run_zoo(*args, "--ckpt_path", "last")[0] == 0
    resumed = torch.load(folder / "runs/cnn/version_1/checkpoints/last.ckpt", weights_only=True)
    assert resumed["global_step"] == 3 * 3 and resumed["epoch"] == 2  # as an uninterrupted run: 3 epochs x 3


def test_a_time_based_last_checkpoint_is_written_mid_epoch(folder, run_zoo):
    """docs/reliability.md's recipe for long epochs: last.ckpt every N seconds, so a kill loses at most N."""
    probe = folder / "seen.json"
    timed = ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath=<run_dir>/checkpoints",
             "--trainer.callbacks.filename=last", "--trainer.callbacks.enable_version_counter=false",
             "--trainer.callbacks.train_time_interval=0:00:00.01",
             "--trainer.callbacks+=tests.helpers.LastCheckpointProbe", f"--trainer.callbacks.out={probe}"]  # fmt: skip
    assert run_zoo(*CNN, "--data.batch_size", "2", "--trainer.max_epochs", "1", *timed)[0] == 0
    seen = json.loads(probe.read_text())  # one epoch of 12 steps: no epoch-end save happened yet
    assert seen[0] == -1 and 0 < max(seen) < len(seen), seen
