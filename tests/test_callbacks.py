"""The default callbacks are configuration: listed by --print_config and config.yaml, added to, replaced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import FAST, only_run_dir

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def fit(run_zoo, image_folder, *extra):
    return run_zoo("fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, *FAST,
                   "--trainer.logger", "false", *extra)  # fmt: skip


def callbacks_of(run_dir: Path) -> list[dict]:
    return yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["callbacks"]


def test_print_config_lists_the_default_callbacks(run_zoo, image_folder, capsys):
    rc, _ = fit(run_zoo, image_folder, "--print_config")
    assert rc == 0
    callbacks = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"]
    names = [(c["class_path"].rsplit(".", 1)[-1], c.get("init_args", {}).get("filename")) for c in callbacks]
    assert names == [("ModelCheckpoint", "best"), ("LastCheckpoint", "last"),
                     ("LearningRateMonitor", None), ("EpochBar", None), ("WandbDashboard", None)]  # fmt: skip
    assert callbacks[0]["init_args"]["dirpath"] == "<run_dir>/checkpoints"


def test_added_callback_and_a_rerun_of_the_saved_config_writes_its_own_folder(run_zoo, image_folder):
    rc, runs = fit(
        run_zoo, image_folder, "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor", "val/loss"
    )
    assert rc == 0
    first = only_run_dir(runs, "cnn")
    classes = [c["class_path"].rsplit(".", 1)[-1] for c in callbacks_of(first)]
    assert classes[:2] == ["ModelCheckpoint", "LastCheckpoint"] and classes[-1] == "EarlyStopping"
    assert (
        callbacks_of(first)[0]["init_args"]["dirpath"] == "<run_dir>/checkpoints"
    )  # the placeholder is kept
    last = first / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    rc, _ = run_zoo("fit", "--config", first / "config.yaml", "--ckpt_path", last, "--trainer.max_epochs", 2)
    assert rc == 0
    second = only_run_dir(runs, "cnn")
    assert second != first and (second / "checkpoints" / "last.ckpt").is_file()
    assert last.read_bytes() == before  # the resumed run did not write into the run it came from


def test_yaml_list_replaces_the_defaults_and_plus_adds_to_them(run_zoo, image_folder, tmp_path):
    own = tmp_path / "own.yaml"
    own.write_text(
        "trainer:\n  callbacks:\n  - class_path: ModelCheckpoint\n"
        "    init_args: {dirpath: <run_dir>/checkpoints, filename: mine, monitor: val/loss}\n"
    )
    rc, runs = fit(run_zoo, image_folder, "--config", own)
    assert rc == 0
    assert sorted(p.name for p in (only_run_dir(runs, "cnn") / "checkpoints").iterdir()) == ["mine.ckpt"]

    more = tmp_path / "more.yaml"
    more.write_text(
        "trainer:\n  callbacks+:\n  - class_path: EarlyStopping\n    init_args: {monitor: val/acc}\n"
    )
    rc, runs = fit(run_zoo, image_folder, "--config", more)
    assert rc == 0
    run_dir = only_run_dir(runs, "cnn")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert callbacks_of(run_dir)[-1]["class_path"].endswith("EarlyStopping")


def test_own_progress_bar_replaces_the_default_one(run_zoo, image_folder):
    assert fit(run_zoo, image_folder, "--trainer.callbacks+=TQDMProgressBar")[0] == 0


STOP_AT_2 = ["--trainer.callbacks+=tests.helpers.StopAfter", "--trainer.callbacks.epoch=2"]


@pytest.mark.parametrize(
    ("seconds", "ending", "saved_before_each_epoch", "saved_at_end"),
    [
        (3600, ["--trainer.max_epochs", 3], [-1, 1, 1], 3),  # epoch 2 was too soon; the last epoch saves
        (3600, ["--trainer.max_epochs", 5, *STOP_AT_2], [-1, 1], 2),  # a stop (early stopping's) saves
        (3600, ["--trainer.max_epochs", 5, "--trainer.max_steps", "STEPS"], [-1, 1], 2),
        (0, ["--trainer.max_epochs", 3], [-1, 1, 2], 3),  # 0: every epoch
    ],
    ids=["max_epochs", "stop", "max_steps", "every_epoch"],
)
def test_last_checkpoint_skips_saves_sooner_than_its_interval_but_never_the_first_or_last(
    run_zoo, image_folder, tmp_path, seconds, ending, saved_before_each_epoch, saved_at_end
):
    own = tmp_path / "last_every.yaml"
    own.write_text(
        "trainer:\n  callbacks:\n  - class_path: zoo.callbacks.LastCheckpoint\n"
        "    init_args: {dirpath: <run_dir>/checkpoints, filename: last, enable_version_counter: false, "
        f"min_seconds_between_saves: {seconds}}}\n"
        f"  - class_path: tests.helpers.LastCheckpointProbe\n    init_args: {{out: {tmp_path / 'seen.json'}}}\n"
    )
    steps = 3  # 30 images, 80 % for training, batch 8
    ending = [str(2 * steps) if a == "STEPS" else a for a in ending]
    rc, runs = fit(run_zoo, image_folder, "--config", own, "--data.batch_size", 8, *ending)
    assert rc == 0
    seen = json.loads((tmp_path / "seen.json").read_text())  # the step in last.ckpt at each batch's start
    assert seen[::steps] == [epoch * steps if epoch > 0 else -1 for epoch in saved_before_each_epoch], seen
    last = torch.load(only_run_dir(runs, "cnn") / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == saved_at_end * steps
