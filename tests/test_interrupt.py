"""Ctrl-C during `zoo fit`: last.ckpt saved, the resume command printed, exit 130; the command resumes."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import make_folder
from zoo.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.slow
def test_ctrl_c_saves_prints_the_resume_command_and_exits_130(tmp_path, monkeypatch, capsys):
    images = make_folder(tmp_path / "images", n=40)
    cmd = [sys.executable, "-m", "zoo.cli", "fit", "--config", str(CONFIGS / "cnn.yaml"),
           "--data.root", str(images), "--data.batch_size", "4", "--data.num_workers", "0",
           "--trainer.max_epochs", "3", "--trainer.logger", "false"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"}
    )
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("epoch 1/3"):
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)  # in epoch 2, or at the end of epoch 1 on a slow machine
            break
    err = "".join(seen) + proc.stderr.read()
    assert proc.wait(timeout=120) == 130, err
    assert "Traceback" not in err and "interrupted in epoch" in err, err
    resume = next(ln for ln in err.splitlines() if ln.startswith("resume with: "))
    args = shlex.split(resume.removeprefix("resume with: "))
    saved_path = tmp_path / args[args.index("--ckpt_path") + 1]
    assert args[:2] == ["zoo", "fit"] and saved_path.is_file()
    saved = torch.load(saved_path, weights_only=False)["global_step"]
    assert 0 < saved < 3 * 24  # where Ctrl-C stopped it (96 training images / batch 4: 24 steps an epoch)

    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(args[1:]) == 0
    out = capsys.readouterr().err
    assert "resuming" in out and "epoch 3/3" in out
    resumed = torch.load(sorted((tmp_path / "runs" / "cnn").iterdir())[-1] / "checkpoints" / "last.ckpt",
                         weights_only=False)  # fmt: skip
    assert (resumed["epoch"], resumed["global_step"]) == (2, 3 * 24)  # as an uninterrupted run ends
