"""The default callbacks are configuration: listed by --print_config and config.yaml, added to, replaced."""

from __future__ import annotations

from pathlib import Path

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
    assert names == [("ModelCheckpoint", "best"), ("ModelCheckpoint", "last"),
                     ("LearningRateMonitor", None), ("EpochBar", None), ("WandbDashboard", None)]  # fmt: skip
    assert callbacks[0]["init_args"]["dirpath"] == "<run_dir>/checkpoints"


def test_added_callback_and_a_rerun_of_the_saved_config_writes_its_own_folder(run_zoo, image_folder):
    rc, runs = fit(
        run_zoo, image_folder, "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor", "val/loss"
    )
    assert rc == 0
    first = only_run_dir(runs, "cnn")
    classes = [c["class_path"].rsplit(".", 1)[-1] for c in callbacks_of(first)]
    assert classes[:2] == ["ModelCheckpoint", "ModelCheckpoint"] and classes[-1] == "EarlyStopping"
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
