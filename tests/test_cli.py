"""The `zoo` command as a user runs it: every model family, the sample, errors, logging, precision."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.conftest import FAST, make_folder, only_run_dir

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NO_LOG = ["--trainer.logger", "false"]


def read_metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    ("config", "extra"),
    [
        ("mlp.yaml", ["--model.hidden_sizes", "[32]"]),
        ("cnn.yaml", ["--model.channels_per_block", "[8, 16]"]),
        (
            "resnet18_finetune.yaml",
            ["--model.backbone", "resnet10t", "--model.pretrained", "false", "--data.image_size", "32"],
        ),
    ],
)
def test_each_family_trains_and_its_checkpoint_carries_the_data_config(run_zoo, image_folder, config, extra):
    rc, runs = run_zoo(
        "fit", "--config", CONFIGS / config, "--data.root", image_folder, "--data.channels", 3,
        "--data.image_size", 16, *extra, *FAST, "--trainer.logger", "CSVLogger",
    )  # fmt: skip
    assert rc == 0
    experiment = config.removesuffix(".yaml")
    run_dir = only_run_dir(runs, experiment)
    for name in ("best.ckpt", "last.ckpt"):
        assert (run_dir / "checkpoints" / name).is_file()
    assert (run_dir / "config.yaml").is_file() and (run_dir / "splits" / "val.txt").is_file()
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    h = ckpt["hyper_parameters"]
    assert h["class_names"] == ["cat", "dog", "owl"]
    assert h["channels"] == 3 and isinstance(h["mean"], list) and isinstance(h["image_size"], int)
    assert ckpt["zoo"]["family"] in ("mlp", "cnn", "timm")
    columns = set(read_metrics(run_dir)[0])
    assert {"train/loss", "train/loss_epoch", "val/loss", "val/acc", "val/f1", "val/acc_best"} <= columns
    assert "val/acc_top5" not in columns  # only 3 classes
    assert any(c.startswith("lr-") for c in columns)  # the LR is logged every step


def test_step_loss_is_logged_on_logging_steps_and_epoch_means_over_every_step(
    run_zoo, image_folder, tmp_path
):
    probe = tmp_path / "steps.json"
    rc, runs = run_zoo(
        "fit", "--config", CONFIGS / "cnn.yaml", *FAST, "--data.root", image_folder, "--data.batch_size", 4,
        "--trainer.max_epochs", 2, "--trainer.log_every_n_steps", 2,
        "--trainer.callbacks+=tests.helpers.StepLossProbe", "--trainer.callbacks.out", probe,
    )  # fmt: skip
    assert rc == 0
    epochs = json.loads(probe.read_text())
    steps = [loss for epoch in epochs for loss, _ in epoch]
    rows = read_metrics(only_run_dir(runs, "cnn"))
    logged = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert logged == pytest.approx(
        steps[1::2], rel=1e-5
    )  # every 2nd step, as --trainer.log_every_n_steps 2 says
    epoch_rows = [r for r in rows if r.get("train/loss_epoch")]
    assert len(epoch_rows) == len(epochs) == 2
    for row, epoch in zip(epoch_rows, epochs, strict=True):
        mean = sum(loss * n for loss, n in epoch) / sum(n for _, n in epoch)
        assert float(row["train/loss_epoch"]) == pytest.approx(mean, rel=1e-5)
        assert 0 <= float(row["train/acc"]) <= 1


@pytest.mark.parametrize(("sleep", "seconds", "interval"), [(0.0, 100.0, (50, 50)), (0.04, 1.0, (10, 25))])
def test_unset_log_interval_is_5_steps_then_about_a_second_of_training(
    run_zoo, image_folder, tmp_path, monkeypatch, sleep, seconds, interval
):
    # 100 s between logged steps: capped at 50 steps however fast or slow (a loaded machine) the steps are
    monkeypatch.setattr("zoo.progress.LOG_SECONDS", seconds)
    probe = tmp_path / "every.json"
    i = FAST.index("--trainer.log_every_n_steps")
    fast = FAST[:i] + FAST[i + 2 :]  # left unset: zoo adapts it
    rc, _ = run_zoo(
        "fit", "--config", CONFIGS / "cnn.yaml", *fast, "--data.root", image_folder, "--data.batch_size", 2,
        "--trainer.callbacks+=tests.helpers.LogIntervalProbe", "--trainer.callbacks.out", probe,
        "--trainer.callbacks.sleep", sleep,
    )  # fmt: skip
    assert rc == 0
    seen = json.loads(probe.read_text())  # 12 steps: 24 training images, batch 2
    assert seen[:6] == [5] * 6  # 12 steps an epoch: ~10 points an epoch, but at least 5 steps apart
    assert len(set(seen[6:])) == 1 and interval[0] <= seen[6] <= interval[1], seen  # from the 6 steps' time


def test_bundled_sample_trains_with_no_data_argument(run_zoo, capsys):
    rc, runs = run_zoo(
        "fit", "--config", CONFIGS / "cnn.yaml", *FAST, "--trainer.limit_train_batches", 3,
        "--trainer.limit_val_batches", 2, *NO_LOG,
    )  # fmt: skip
    assert rc == 0
    out = capsys.readouterr()
    assert "best checkpoint" in out.err and "best epoch 1: val/acc " in out.err
    ckpt = torch.load(only_run_dir(runs, "cnn") / "checkpoints" / "best.ckpt", weights_only=True)
    assert len(ckpt["hyper_parameters"]["class_names"]) == 10


def test_top5_and_test_split_with_validate_and_test(run_zoo, tmp_path, capsys):
    root = make_folder(tmp_path / "six", classes=[f"c{i}" for i in range(6)], n=6, layout="split")
    for i in range(6):
        make_folder(root / "test", classes=[f"c{i}"], n=2)
    args = [
        "--config",
        CONFIGS / "cnn.yaml",
        "--data.root",
        root,
        "--data.image_size",
        16,
        "--data.channels",
        3,
    ]
    rc, runs = run_zoo("fit", *args, *FAST, "--trainer.logger", "CSVLogger")
    assert rc == 0
    run_dir = only_run_dir(runs, "cnn")
    assert "val/acc_top5" in read_metrics(run_dir)[0]
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    capsys.readouterr()
    assert run_zoo("test", *args, "--ckpt_path", ckpt, *NO_LOG)[0] == 0
    out = capsys.readouterr().out
    assert "test/acc" in out and "test/ece" in out
    assert run_zoo("validate", *args, "--ckpt_path", ckpt, *NO_LOG)[0] == 0
    assert "val/acc" in capsys.readouterr().out


class LogitsDtypeProbe(L.Callback):
    """Records the dtype of the net's output in each training step."""

    dtypes: list[torch.dtype] = []

    def on_train_start(self, trainer, pl_module) -> None:
        def record(_module, _inputs, output) -> None:
            if pl_module.training:
                LogitsDtypeProbe.dtypes.append(output.dtype)

        pl_module.net.register_forward_hook(record)


def test_bf16_mixed_precision_on_cpu(run_zoo, image_folder, capsys):
    LogitsDtypeProbe.dtypes = []
    rc, runs = run_zoo(
        "fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, "--data.channels", 3,
        "--data.image_size", 16, "--trainer.precision", "bf16-mixed", *FAST, *NO_LOG,
        "--trainer.callbacks+=tests.test_cli.LogitsDtypeProbe",
    )  # fmt: skip
    assert rc == 0
    assert "on cpu (bf16-mixed)" in capsys.readouterr().err
    assert LogitsDtypeProbe.dtypes and set(LogitsDtypeProbe.dtypes) == {
        torch.bfloat16
    }  # autocast in training
    best = torch.load(only_run_dir(runs, "cnn") / "checkpoints" / "best.ckpt", weights_only=True)
    assert {v.dtype for v in best["state_dict"].values() if v.is_floating_point()} == {
        torch.float32
    }  # fp32 master


def test_label_smoothing_is_the_training_loss_and_the_validation_criterion():
    from types import SimpleNamespace

    from zoo.scratch import CNNClassifier

    torch.manual_seed(0)
    images, labels = torch.rand(8, 1, 16, 16), torch.randint(0, 3, (8,))
    for smoothing in (0.0, 0.3):
        torch.manual_seed(0)
        model = CNNClassifier(
            class_names=["a", "b", "c"], image_size=16, channels=1, label_smoothing=smoothing
        )
        model.eval()  # no dropout: the step's logits are model(images)
        model._train_sums = None
        model._trainer = SimpleNamespace(
            _logger_connector=SimpleNamespace(should_update_logs=False), current_epoch=0
        )
        with torch.no_grad():
            expected = torch.nn.functional.cross_entropy(model(images), labels, label_smoothing=smoothing)
            assert float(model.training_step((images, labels), 0)) == pytest.approx(float(expected), rel=1e-5)
            assert float(model.criterion(model(images), labels)) == pytest.approx(float(expected), rel=1e-5)
        if smoothing == 0.0:
            unsmoothed = float(expected)
    assert unsmoothed != pytest.approx(float(expected), abs=1e-4)  # 0.3 changes this batch's loss


def test_wandb_runs_offline_without_a_key(run_zoo, image_folder, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, so no key
    rc, runs = run_zoo(
        "fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, "--data.channels", 3,
        "--data.image_size", 16, *FAST,
    )  # fmt: skip
    assert rc == 0
    run_dir = only_run_dir(runs, "cnn")
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    assert f"wandb sync {offline[0].relative_to(tmp_path)}" in capsys.readouterr().err
    assert (run_dir / "metrics.csv").is_file()  # the CSV copy beside W&B


def test_tensorboard_logger_writes_into_the_run_folder(run_zoo, image_folder):
    rc, runs = run_zoo(
        "fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, "--data.channels", 3,
        "--data.image_size", 16, *FAST, "--trainer.logger", "TensorBoardLogger",
    )  # fmt: skip
    assert rc == 0
    assert list(only_run_dir(runs, "cnn").glob("events.out.tfevents.*"))


def test_print_config_is_complete(run_zoo, capsys):
    rc, _ = run_zoo("fit", "--config", CONFIGS / "resnet18_finetune.yaml", "--print_config")
    out = capsys.readouterr().out
    assert rc == 0
    for key in ("class_path: zoo.finetune.TimmClassifier", "freeze_epochs: 1", "backbone_lr_mult: 0.1",
                "label_smoothing: 0.1", "class_path: datamodules.ImageFolderDataModule", "max_epochs: 5"):  # fmt: skip
        assert key in out
    # ...and defaults the recipe does not spell out
    for key in ("drop_rate: 0.0", "val_fraction: 0.2", "momentum: 0.9", "cache_gb: null", "runs_dir: runs"):
        assert key in out


def test_help_lists_every_verb(capsys):
    from zoo.cli import VERBS, main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(verb in out for verb in VERBS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data.root", "/no/such/folder"], "data folder /no/such/folder does not exist"),
        (["--model.lr", "fast"], "--model.lr fast: expected a number or 'auto'"),
    ],
)
def test_user_mistakes_exit_2_with_one_line_and_no_traceback(tmp_path, args, message):
    """Run the installed console script as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "fit", "--config", str(CONFIGS / "cnn.yaml"), *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    if "does not exist" in message:
        error_lines = [ln for ln in proc.stderr.splitlines() if "zoo: error" in ln]
        assert len(error_lines) == 1 and "--data.root" in error_lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))


def test_validate_rebuilds_the_checkpoints_model_and_rejects_data_it_cannot_read(
    run_zoo, image_folder, capsys
):
    args = ["--data.root", image_folder, "--data.image_size", 16]
    assert (
        run_zoo("fit", "--config", CONFIGS / "mlp.yaml", *args, "--data.channels", 3, *FAST, *NO_LOG)[0] == 0
    )
    ckpt = next(Path("runs").rglob("best.ckpt"))
    capsys.readouterr()
    # Another recipe's config: the model comes from the checkpoint's own hyperparameters.
    rc, _ = run_zoo(
        "validate",
        "--config",
        CONFIGS / "cnn.yaml",
        *args,
        "--data.channels",
        3,
        "--ckpt_path",
        ckpt,
        *NO_LOG,
    )
    assert rc == 0 and "val/acc" in capsys.readouterr().out
    # Grayscale data for an RGB checkpoint cannot work: one line saying so.
    rc, _ = run_zoo(
        "validate",
        "--config",
        CONFIGS / "mlp.yaml",
        *args,
        "--data.channels",
        1,
        "--ckpt_path",
        ckpt,
        *NO_LOG,
    )
    assert rc == 2
    assert "trained with channels=3 but this data gives 1" in capsys.readouterr().err


def test_logger_in_yaml_with_run_dir_placeholder(run_zoo, image_folder, tmp_path):
    extra = tmp_path / "tb.yaml"
    extra.write_text(
        "trainer:\n  logger:\n    class_path: lightning.pytorch.loggers.TensorBoardLogger\n"
        "    init_args: {save_dir: <run_dir>}\n"
    )
    rc, runs = run_zoo("fit", "--config", CONFIGS / "cnn.yaml", "--config", extra, "--data.root", image_folder,
                       "--data.channels", 3, "--data.image_size", 16, *FAST)  # fmt: skip
    assert rc == 0
    run_dir = only_run_dir(runs, "cnn")
    assert list(run_dir.glob("events.out.tfevents.*")) and not (Path("<run_dir>")).exists()


def test_run_configs_naming_the_old_module_still_load():
    from zoo.classifier import (  # run configs before the split say zoo.classifier.X
        CNNClassifier,
        TimmClassifier,
    )
    from zoo.finetune import TimmClassifier as Moved
    from zoo.scratch import CNNClassifier as MovedCNN

    assert CNNClassifier is MovedCNN and TimmClassifier is Moved
